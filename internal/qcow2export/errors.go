// Engine errors to errnos: what the NBD server reads with errors.Is.
package qcow2export

import (
	"errors"
	"syscall"

	"github.com/qnbd/qnbd/qcow2"
)

// Error is an engine error classified as one errno. errors.Is matches the errno only, so that
// the server's classification (which tries EPERM, ENOSPC, EINVAL ... in turn) cannot be
// misled by something deeper in the engine's chain; Err keeps the engine's error.
type Error struct {
	Err   error
	Errno syscall.Errno
}

func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the errno.
func (e *Error) Unwrap() error { return e.Errno }

// classify maps an engine error to its errno:
//
//	qcow2.ErrCorrupt, ErrFormat, ErrCompressedData, ErrUnsupported  EIO
//	qcow2.ErrReadOnly                                                EPERM
//	qcow2.ErrNoSpace                                                 ENOSPC
//	qcow2.ErrOutOfRange                                              EINVAL
//	qcow2.ErrSlowZero                                                ENOTSUP
//	qcow2.ErrClosed                                                  ESHUTDOWN
//	a host errno (EIO, ENOSPC, EDQUOT, EFBIG, EROFS ...)             that errno
//	anything else                                                    EIO
func classify(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	errno := syscall.EIO
	var host syscall.Errno
	switch {
	case errors.Is(err, qcow2.ErrCorrupt), errors.Is(err, qcow2.ErrFormat),
		errors.Is(err, qcow2.ErrCompressedData), errors.Is(err, qcow2.ErrUnsupported):
		errno = syscall.EIO
	case errors.Is(err, qcow2.ErrSlowZero):
		errno = syscall.ENOTSUP
	case errors.Is(err, qcow2.ErrReadOnly):
		errno = syscall.EPERM
	case errors.Is(err, qcow2.ErrNoSpace):
		errno = syscall.ENOSPC
	case errors.Is(err, qcow2.ErrOutOfRange):
		errno = syscall.EINVAL
	case errors.Is(err, qcow2.ErrClosed):
		errno = syscall.ESHUTDOWN
	case errors.As(err, &host) && host != 0:
		errno = host
	}
	return &Error{Err: err, Errno: errno}
}
