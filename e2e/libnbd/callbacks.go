// Callback registry: Go values reachable from C through an integer id, and the exported
// functions that libnbd's callbacks land in (via the trampolines in shim.c).
package libnbd

/*
#include <stdint.h>
#include <stdlib.h>
*/
import "C"

import (
	"errors"
	"runtime"
	"sync"
	"syscall"
	"unsafe"
)

// registry maps ids passed to C as user_data to Go values. C never holds a Go pointer; it
// holds an id, and the free callback deletes it. Ids start at 1 (0 means "no callback").
type registry struct {
	mu   sync.Mutex
	next uintptr
	m    map[uintptr]any
}

var callbacks = registry{m: map[uintptr]any{}}

func (r *registry) add(v any) uintptr {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.next++
	r.m[r.next] = v
	return r.next
}

func (r *registry) get(id uintptr) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[id]
}

func (r *registry) remove(id uintptr) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.m[id]
	delete(r.m, id)
	return v
}

// live counts the registered entries; tests use it to prove that libnbd freed them all.
func (r *registry) live() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// extentCallback carries a BlockStatus callback and the first error it returned.
type extentCallback struct {
	fn  func(metacontext string, offset uint64, extents []Extent) error
	err error
}

// chunkCallback carries a PreadStructured callback and the first error it returned.
type chunkCallback struct {
	fn  func(Chunk) error
	err error
}

// listCallback receives one name (and description) per call.
type listCallback struct {
	fn func(name, description string)
}

// pinnedBuffer keeps an asynchronous command's Go buffer pinned until libnbd retires it.
type pinnedBuffer struct {
	pinner runtime.Pinner
}

//export goExtentCallback
func goExtentCallback(id C.uintptr_t, metacontext *C.char, offset C.uint64_t, entries *C.uint32_t, n C.size_t, errp *C.int) C.int {
	cb, ok := callbacks.get(uintptr(id)).(*extentCallback)
	if !ok || cb.err != nil {
		return -1
	}
	raw := unsafe.Slice((*uint32)(unsafe.Pointer(entries)), int(n))
	ext := make([]Extent, 0, len(raw)/2)
	for i := 0; i+1 < len(raw); i += 2 {
		ext = append(ext, Extent{Length: raw[i], Flags: raw[i+1]})
	}
	if err := cb.fn(C.GoString(metacontext), uint64(offset), ext); err != nil {
		cb.err = err
		var errno syscall.Errno
		if !errors.As(err, &errno) {
			errno = syscall.EIO
		}
		*errp = C.int(errno)
		return -1
	}
	return 0
}

//export goChunkCallback
func goChunkCallback(id C.uintptr_t, offset C.uint64_t, count C.size_t, status C.uint, errp *C.int) C.int {
	cb, ok := callbacks.get(uintptr(id)).(*chunkCallback)
	if !ok {
		return -1
	}
	if cb.err != nil {
		return 0 // the command already failed; later chunks are ignored
	}
	c := Chunk{Status: ReadStatus(status), Offset: uint64(offset), Length: uint64(count), Errno: syscall.Errno(*errp)}
	if err := cb.fn(c); err != nil {
		cb.err = err
		var errno syscall.Errno
		if !errors.As(err, &errno) {
			errno = syscall.EPROTO
		}
		*errp = C.int(errno)
		return -1
	}
	return 0
}

//export goListCallback
func goListCallback(id C.uintptr_t, name, description *C.char) C.int {
	cb, ok := callbacks.get(uintptr(id)).(*listCallback)
	if !ok {
		return -1
	}
	var desc string
	if description != nil {
		desc = C.GoString(description)
	}
	cb.fn(C.GoString(name), desc)
	return 0
}

//export goFreeCallback
func goFreeCallback(id C.uintptr_t) {
	if pb, ok := callbacks.remove(uintptr(id)).(*pinnedBuffer); ok {
		pb.pinner.Unpin()
	}
}
