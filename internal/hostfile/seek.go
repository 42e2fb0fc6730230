// SEEK_DATA and SEEK_HOLE: where a sparse file holds data, as QEMU's file driver finds it.
package hostfile

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// SeekData returns the first offset at or after off that holds data; ErrNoMoreData when none
// does (ENXIO, also for off at or past the end of the file).
func (h *File) SeekData(off int64) (int64, error) {
	return h.seek("SEEK_DATA", off, unix.SEEK_DATA)
}

// SeekHole returns the first offset at or after off in a hole; the end of the file counts as
// a hole.
func (h *File) SeekHole(off int64) (int64, error) {
	return h.seek("SEEK_HOLE", off, unix.SEEK_HOLE)
}

func (h *File) seek(op string, off int64, whence int) (int64, error) {
	var pos int64
	err := retry(func() error {
		var err error
		pos, err = unix.Seek(h.fd(), off, whence)
		return err
	})
	switch {
	case err == nil:
		return pos, nil
	case errors.Is(err, unix.ENXIO):
		return 0, ErrNoMoreData
	case unsupportedErrno(err) || errors.Is(err, unix.EINVAL):
		return 0, &unsupportedError{op: "lseek " + op, path: h.Name(), errno: err}
	default:
		return 0, pathError("lseek "+op, h.Name(), err)
	}
}

// FindAllocation answers for off inside the file, as QEMU's find_allocation does: data == off
// and hole > off (the next hole, or the end of the file) when off holds data; hole == off and
// data > off (the next data) when off is in a hole; ErrNoMoreData when no data lies at or after
// off. A file that moved under the seeks gives an error rather than a wrong answer.
func (h *File) FindAllocation(off int64) (data, hole int64, err error) {
	d, err := h.SeekData(off)
	if err != nil {
		return 0, 0, err
	}
	if d < off {
		return 0, 0, fmt.Errorf("lseek SEEK_DATA at %d in %s returned %d", off, h.Name(), d)
	}
	if d > off {
		return d, off, nil
	}
	hl, err := h.SeekHole(off)
	if err != nil {
		return 0, 0, err
	}
	if hl <= off {
		return 0, 0, fmt.Errorf("lseek SEEK_HOLE at %d in %s returned %d", off, h.Name(), hl)
	}
	return off, hl, nil
}
