// Handle lifetime and the call helpers that read libnbd's thread-local error state.
package libnbd

/*
#cgo pkg-config: libnbd
#include <stdlib.h>
#include <libnbd.h>
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// Handle is one libnbd handle: one NBD connection and its settings.
type Handle struct {
	// mu is held shared by every call on h and exclusively by Close, so that nbd_close never
	// runs while another goroutine is inside libnbd with the same handle.
	mu sync.RWMutex
	h  *C.struct_nbd_handle // nil after Close
}

// Create allocates a new handle (nbd_create). The handle is not connected.
func Create() (*Handle, error) {
	var h *C.struct_nbd_handle
	err := callPtr("nbd_create", func() bool {
		h = C.nbd_create()
		return h != nil
	})
	if err != nil {
		return nil, err
	}
	return &Handle{h: h}, nil
}

// Close shuts the connection without waiting for the server (nbd_close) and frees the handle.
// Commands still in flight are abandoned and their buffers released. Close is idempotent.
func (h *Handle) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h != nil {
		C.nbd_close(h.h)
		h.h = nil
	}
	return nil
}

// with runs f with the raw handle while holding the shared lock, or returns ErrClosed.
func (h *Handle) with(f func(*C.struct_nbd_handle) error) error {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.h == nil {
		return ErrClosed
	}
	return f(h.h)
}

// callInt runs one libnbd call that returns -1 on error, and returns its result. The call
// and the reads of the thread-local error run on one locked OS thread.
func callInt(op string, f func() C.int) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rc := f()
	if rc == -1 {
		return -1, lastError(op)
	}
	return int(rc), nil
}

// callInt64 is callInt for calls returning int64_t (sizes, cookies).
func callInt64(op string, f func() C.int64_t) (int64, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rc := f()
	if rc == -1 {
		return -1, lastError(op)
	}
	return int64(rc), nil
}

// callPtr runs one libnbd call that signals failure by returning NULL; f reports success.
func callPtr(op string, f func() bool) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if !f() {
		return lastError(op)
	}
	return nil
}

// callBool runs a predicate call (returns 1, 0 or -1).
func callBool(op string, f func() C.int) (bool, error) {
	rc, err := callInt(op, f)
	return rc == 1, err
}

// callString runs a call returning a malloc'd string (or NULL on error) and frees it.
func callString(op string, f func() *C.char) (string, error) {
	var s *C.char
	if err := callPtr(op, func() bool { s = f(); return s != nil }); err != nil {
		return "", err
	}
	defer C.free(unsafe.Pointer(s))
	return C.GoString(s), nil
}
