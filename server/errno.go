// Error classes: backend errors become NBD errnos in replies; protocol violations close the
// connection.
package server

import (
	"context"
	"errors"
	"fmt"
	"syscall"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("nbd: server closed")

// protocolError is a violation by the client that ends the connection with a hard
// disconnect (the spec: "Either side MAY initiate a hard disconnect if it detects a violation
// by the other party of a mandatory condition"). It never becomes an errno.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "nbd: protocol violation: " + e.msg }

func violation(format string, args ...any) error {
	return &protocolError{msg: fmt.Sprintf(format, args...)}
}

// errnoOf maps a backend error to the NBD errno sent to the client, by errors.Is against
// syscall errnos so that backends need not import this package:
//
//	nil                          -> 0
//	EPERM, EROFS, EACCES         -> NBD_EPERM
//	ENOSPC, EDQUOT, EFBIG        -> NBD_ENOSPC ("SHOULD map the EDQUOT and EFBIG errors to NBD_ENOSPC")
//	EINVAL                       -> NBD_EINVAL
//	ENOMEM                       -> NBD_ENOMEM
//	EOVERFLOW                    -> NBD_EOVERFLOW
//	ENOTSUP/EOPNOTSUPP           -> NBD_ENOTSUP for a FAST_ZERO write-zeroes, else NBD_EINVAL
//	                                ("SHOULD NOT return NBD_ENOTSUP except ... FAST_ZERO")
//	ESHUTDOWN, context.Canceled  -> NBD_ESHUTDOWN
//	anything else (EIO included) -> NBD_EIO
func errnoOf(err error, fastZero bool) Errno {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EACCES):
		return EPERM
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.EFBIG):
		return ENOSPC
	case errors.Is(err, syscall.EINVAL):
		return EINVAL
	case errors.Is(err, syscall.ENOMEM):
		return ENOMEM
	case errors.Is(err, syscall.EOVERFLOW):
		return EOVERFLOW
	case errors.Is(err, syscall.ENOTSUP), errors.Is(err, syscall.EOPNOTSUPP):
		if fastZero {
			return ENOTSUP
		}
		return EINVAL
	case errors.Is(err, syscall.ESHUTDOWN), errors.Is(err, context.Canceled):
		return ESHUTDOWN
	}
	return EIO
}
