// Errors worded as QEMU words them, so that a user meets the same text from qnbd and QEMU.
package imagelock

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// ErrLocked matches (errors.Is) every *Error that means another process holds a lock in the
// way: a permission it refuses to share, or one this process refuses to share.
var ErrLocked = errors.New("image is locked by another process")

// Error is a failure to lock an image file.
//
// With Perm set, another process is in the way: it refuses to share Perm, which this
// process wants (QEMU: `Failed to get "write" lock`), or, with Shared, it holds Perm, which
// this process refuses to share (`Failed to get shared "write" lock`). With Perm zero, the
// lock call itself failed on Byte with Err (`Failed to lock byte 100`).
type Error struct {
	// Path names the file, as it was opened.
	Path string
	// Perm is the single permission in conflict; 0 when a lock call failed.
	Perm Perm
	// Shared is set when another process holds Perm and this one does not share it.
	Shared bool
	// Byte is the byte whose lock call failed (Perm zero).
	Byte int
	// Err is the system error of a failed lock call (Perm zero).
	Err error
}

// Error returns QEMU's message for the failure, without the hint (see Hint).
func (e *Error) Error() string {
	switch {
	case e.Perm != 0 && e.Shared:
		return fmt.Sprintf("Failed to get shared \"%s\" lock", e.Perm)
	case e.Perm != 0:
		return fmt.Sprintf("Failed to get \"%s\" lock", e.Perm)
	case isContention(e.Err):
		// QEMU leaves out the errno text when the byte is simply taken.
		return fmt.Sprintf("Failed to lock byte %d", e.Byte)
	}
	return fmt.Sprintf("Failed to lock byte %d: %s", e.Byte, errnoText(e.Err))
}

// Hint is the second line QEMU prints after a conflict ("Is another process using the image
// [PATH]?"), or "" when the failure was not a conflict found by the check.
func (e *Error) Hint() string {
	if e.Perm == 0 {
		return ""
	}
	return "Is another process using the image [" + e.Path + "]?"
}

// Is reports ErrLocked for conflicts (and for lock calls that failed because the byte was
// taken).
func (e *Error) Is(target error) bool {
	return target == ErrLocked && (e.Perm != 0 || isContention(e.Err))
}

// Unwrap returns the system error of a failed lock call.
func (e *Error) Unwrap() error { return e.Err }

// isContention reports the errors fcntl gives for a byte someone else has locked.
func isContention(err error) bool {
	return errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EACCES)
}

// errnoText is strerror's wording: Go's errno strings are strerror's with a lower-case
// first letter.
func errnoText(err error) string {
	var en syscall.Errno
	if !errors.As(err, &en) {
		return err.Error()
	}
	s := en.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
