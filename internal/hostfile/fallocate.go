// fallocate: punch hole, zero range and reserve, under the one error policy (doc.go).
package hostfile

import (
	"errors"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// PunchHole deallocates [off, off+n) keeping the file's length: the range reads back as zeros.
func (h *File) PunchHole(off, n int64) error {
	return h.fallocate("punch hole", &h.noPunch, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}

// ZeroRange makes [off, off+n) read as zeros and keeps it allocated (FALLOC_FL_ZERO_RANGE). It
// does not keep the length: a range past the end of the file extends it, as QEMU's file
// driver does. EINVAL is reported as ErrUnsupported but not remembered (doc.go).
func (h *File) ZeroRange(off, n int64) error {
	err := h.fallocate("zero range", &h.noZeroRange, unix.FALLOC_FL_ZERO_RANGE, off, n)
	if errors.Is(err, unix.EINVAL) && !errors.Is(err, ErrUnsupported) {
		return &unsupportedError{op: "zero range", path: h.Name(), errno: unix.EINVAL}
	}
	return err
}

// Allocate reserves [off, off+n), growing the file if it is shorter (fallocate mode 0).
func (h *File) Allocate(off, n int64) error {
	return h.fallocate("fallocate", &h.noAllocate, 0, off, n)
}

// fallocate runs fallocate(mode) unless the file system refused mode before (*refused), and
// remembers a refusal. An empty range succeeds without a system call.
func (h *File) fallocate(op string, refused *atomic.Bool, mode uint32, off, n int64) error {
	if n == 0 {
		return nil
	}
	if refused.Load() {
		return &unsupportedError{op: op, path: h.Name(), errno: unix.EOPNOTSUPP}
	}
	err := retry(func() error { return unix.Fallocate(h.fd(), mode, off, n) })
	switch {
	case err == nil:
		return nil
	case unsupportedErrno(err):
		refused.Store(true)
		return &unsupportedError{op: op, path: h.Name(), errno: err}
	default:
		return pathError(op, h.Name(), err)
	}
}

// Mode names a fallocate operation for Refuse.
type Mode int

const (
	// ModePunchHole is PunchHole.
	ModePunchHole Mode = iota
	// ModeZeroRange is ZeroRange.
	ModeZeroRange
	// ModeAllocate is Allocate.
	ModeAllocate
)

// Refuse makes the File treat mode as refused by the file system from now on, as after an
// EOPNOTSUPP: the calls fail with ErrUnsupported without a system call. Tests use it to take
// the fallback paths on a file system that can do everything.
func (h *File) Refuse(mode Mode) {
	switch mode {
	case ModePunchHole:
		h.noPunch.Store(true)
	case ModeZeroRange:
		h.noZeroRange.Store(true)
	case ModeAllocate:
		h.noAllocate.Store(true)
	}
}
