// Error: libnbd's message and errno, as returned by every failed call.
package libnbd

/*
#include <libnbd.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrClosed is returned by calls on a Handle after Close.
var ErrClosed = errors.New("libnbd: handle is closed")

// Error is a failed libnbd call.
type Error struct {
	// Op is the C function that failed, e.g. "nbd_pread".
	Op string
	// Msg is libnbd's description (nbd_get_error); it usually starts with the function name.
	Msg string
	// Errno is nbd_get_errno: the errno libnbd or the server reported, 0 if none.
	Errno syscall.Errno
}

func (e *Error) Error() string {
	msg := e.Msg
	if msg == "" {
		msg = e.Op + ": failed"
	}
	if e.Errno != 0 {
		return fmt.Sprintf("libnbd: %s (errno %d %s)", msg, int(e.Errno), errnoName(e.Errno))
	}
	return "libnbd: " + msg
}

// Unwrap returns the errno, so errors.Is(err, syscall.EIO) works.
func (e *Error) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// lastError reads the calling thread's libnbd error. The caller holds the OS thread.
func lastError(op string) error {
	var msg string
	if m := C.nbd_get_error(); m != nil {
		msg = C.GoString(m)
	}
	return &Error{Op: op, Msg: msg, Errno: syscall.Errno(C.nbd_get_errno())}
}

// errnoName gives the symbolic name of the errnos NBD can carry, for readable test output.
func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EPERM:
		return "EPERM"
	case syscall.EIO:
		return "EIO"
	case syscall.ENOMEM:
		return "ENOMEM"
	case syscall.EINVAL:
		return "EINVAL"
	case syscall.ENOSPC:
		return "ENOSPC"
	case syscall.EOVERFLOW:
		return "EOVERFLOW"
	case syscall.ENOTSUP:
		return "ENOTSUP"
	case syscall.ESHUTDOWN:
		return "ESHUTDOWN"
	case syscall.ENOTCONN:
		return "ENOTCONN"
	case syscall.ERANGE:
		return "ERANGE"
	}
	return e.Error()
}
