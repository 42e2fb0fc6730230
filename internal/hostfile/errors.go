// The host-file layer's error classes: what the file system cannot do, and no data ahead.
package hostfile

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// ErrUnsupported: the file system cannot do the operation (fallocate mode, SEEK_DATA). It is
// a hint to fall back, never a failure of the data already there.
var ErrUnsupported = errors.New("operation not supported by the file system")

// ErrNoMoreData is SeekData's answer when no data lies at or after the offset (ENXIO).
var ErrNoMoreData = errors.New("no data at or after this offset")

// unsupportedErrno reports the errnos QEMU's file driver translates to ENOTSUP.
func unsupportedErrno(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) ||
		errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.ENODEV)
}

// unsupportedError is ErrUnsupported carrying the errno the file system gave, so that it
// matches both.
type unsupportedError struct {
	op, path string
	errno    error
}

func (e *unsupportedError) Error() string {
	return e.op + " " + e.path + ": " + ErrUnsupported.Error() + " (" + e.errno.Error() + ")"
}

// Is matches ErrUnsupported and the errno.
func (e *unsupportedError) Is(target error) bool {
	return target == ErrUnsupported || errors.Is(e.errno, target)
}

func (e *unsupportedError) Unwrap() error { return e.errno }

// pathError wraps a failed system call's errno with its operation and file.
func pathError(op, path string, err error) error {
	return &os.PathError{Op: op, Path: path, Err: err}
}

// retry runs f until it fails with something other than EINTR.
func retry(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
