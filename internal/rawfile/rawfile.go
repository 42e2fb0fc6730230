// The raw image backend: open, read/write/flush, trim, write-zeroes, SEEK_DATA/SEEK_HOLE
// allocation and fadvise caching.
package rawfile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/qnbd/qnbd/internal/hostfile"
	"github.com/qnbd/qnbd/internal/probe"
	"github.com/qnbd/qnbd/server"
)

// Options configures Open.
type Options struct {
	// ReadOnly opens the file read-only; writes fail with EROFS.
	ReadOnly bool
	// WriteThrough syncs after every write (qemu cache=writethrough and directsync).
	WriteThrough bool
	// IgnoreFlush skips every sync (qemu cache=unsafe).
	IgnoreFlush bool
	// Probed marks a file whose format was probed rather than given: changes that would make
	// its first block probe as another format fail with EPERM, and changes are accounted in
	// whole 512-byte sectors at the end of the file (see docs/probing.md).
	Probed bool
}

// File is an open raw image.
type File struct {
	h    *hostfile.File // every sync, fallocate and lseek (docs/hostfile.md)
	f    *os.File       // h.OS(), for pread/pwrite
	size uint64         // the export size: the length at Open rounded up to a sector
	opts Options

	guard *probe.Guard // non-nil when Options.Probed
	eof   atomic.Int64 // the file's length as far as this File knows (it only grows here)
}

// Interfaces a File implements beyond server.Backend.
var (
	_ server.Trimmer       = (*File)(nil)
	_ server.Zeroer        = (*File)(nil)
	_ server.BlockStatuser = (*File)(nil)
	_ server.Cacher        = (*File)(nil)
)

// Open opens path, a regular file or a block device, as a raw image.
func Open(path string, o Options) (*File, error) {
	h, err := hostfile.Open(path, hostfile.Options{ReadOnly: o.ReadOnly})
	if err != nil {
		return nil, err
	}
	f := h.OS()
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	var size int64
	switch m := fi.Mode(); {
	case m.IsRegular():
		size = fi.Size()
	case m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0:
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: size of block device: %w", path, err)
		}
	default:
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file or block device", path)
	}
	r := &File{h: h, f: f, size: roundUp(uint64(size)), opts: o}
	r.eof.Store(size)
	if o.Probed {
		r.guard = new(probe.Guard)
	}
	return r, nil
}

// Size is the file's length at Open rounded up to a whole sector (512 bytes), as QEMU's
// block layer sizes every raw image; the tail past the end of the file reads as zeros.
func (r *File) Size() uint64 { return r.size }

// MinBlockSize is the minimum block size to advertise: 512 for a probed file (QEMU's raw
// driver restricts a probed image to whole sectors), else 0 (no minimum).
func (r *File) MinBlockSize() uint32 {
	if r.opts.Probed {
		return SectorSize
	}
	return 0
}

// File returns the open file (for image locks, which must sit on the descriptor that does the
// I/O so that they last as long as it: see internal/imagelock).
func (r *File) File() *os.File { return r.f }

// ReadAt reads p at off. Bytes past the end of a file that shrank since Open read as zeros.
func (r *File) ReadAt(_ context.Context, p []byte, off uint64) error {
	n, err := r.f.ReadAt(p, int64(off))
	if errors.Is(err, io.EOF) {
		clear(p[n:])
		return nil
	}
	return err
}

// WriteAt writes p at off, durably when fua (or WriteThrough) is set. On a probed file a
// write that would change block 0's probe fails with EPERM.
func (r *File) WriteAt(_ context.Context, p []byte, off uint64, fua bool) error {
	if r.opts.ReadOnly {
		return syscall.EROFS
	}
	n := uint64(len(p))
	err := r.guard.Change(r.f, off, n, probe.Overlay(p), func() error {
		if _, err := r.f.WriteAt(p, int64(off)); err != nil {
			return err
		}
		return r.grown(off+n, r.sectorEnd(off, off+n, true))
	})
	if err != nil {
		return err
	}
	return r.syncIf(fua)
}

// Flush makes every write that has returned durable (fdatasync).
func (r *File) Flush(context.Context) error { return r.syncIf(true) }

func (r *File) syncIf(fua bool) error {
	if r.opts.IgnoreFlush || r.opts.ReadOnly || !(fua || r.opts.WriteThrough) {
		return nil
	}
	return r.h.Sync()
}

// Trim punches a hole; a filesystem without hole punching makes it a successful no-op, as a
// trim is only a hint.
func (r *File) Trim(_ context.Context, off, length uint64, fua bool) error {
	if r.opts.ReadOnly {
		return syscall.EROFS
	}
	err := r.guard.Change(r.f, off, length, probe.Zeroed(length), func() error {
		if err := r.punch(off, length); err != nil && !unsupported(err) {
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return r.syncIf(fua)
}

// WriteZeroes zeroes [off, off+length): with NoHole by FALLOC_FL_ZERO_RANGE (the range stays
// allocated), otherwise by punching a hole; when the filesystem can do neither it writes
// zeros, unless FastZero asks to fail with ENOTSUP instead.
func (r *File) WriteZeroes(_ context.Context, off, length uint64, f server.ZeroFlags) error {
	if r.opts.ReadOnly {
		return syscall.EROFS
	}
	err := r.guard.Change(r.f, off, length, probe.Zeroed(length), func() error {
		return r.zero(off, length, f)
	})
	if err != nil {
		return err
	}
	return r.syncIf(f.FUA)
}

// zero is WriteZeroes without the guard and the sync.
func (r *File) zero(off, length uint64, f server.ZeroFlags) error {
	var err error
	if f.NoHole {
		err = r.zeroRange(off, length)
	} else {
		err = r.punch(off, length)
		if unsupported(err) {
			err = r.zeroRange(off, length)
		}
	}
	if unsupported(err) {
		if f.FastZero {
			return syscall.ENOTSUP
		}
		err = r.writeZeros(off, length)
	}
	if err != nil {
		return err
	}
	end := off + length
	if f.NoHole {
		// ZERO_RANGE (or the zeros written) extends the file to the end of the range.
		r.noteEOF(int64(end))
	}
	return r.grown(0, r.sectorEnd(off, end, false))
}

func (r *File) punch(off, length uint64) error {
	return r.h.PunchHole(int64(off), int64(length))
}

// zeroRange zeroes with FALLOC_FL_ZERO_RANGE without KEEP_SIZE, so that, as with QEMU's
// file driver, zeroing the tail past the end of the file extends it.
func (r *File) zeroRange(off, length uint64) error {
	return r.h.ZeroRange(int64(off), int64(length))
}

var zeros = make([]byte, 1<<20)

func (r *File) writeZeros(off, length uint64) error {
	for length > 0 {
		n := min(length, uint64(len(zeros)))
		if _, err := r.f.WriteAt(zeros[:n], int64(off)); err != nil {
			return err
		}
		off += n
		length -= n
	}
	return nil
}

// maxExtents bounds one Allocation answer; callers ask again for the rest.
const maxExtents = 1024

// Allocation maps [off, off+length) with SEEK_DATA/SEEK_HOLE: holes are StateHole|StateZero,
// data is 0. Where the filesystem cannot tell (hostfile.ErrUnsupported), everything is data.
func (r *File) Allocation(_ context.Context, off, length uint64) ([]server.Extent, error) {
	end := min(off+length, r.size)
	if off >= end {
		return nil, syscall.EINVAL
	}
	var out []server.Extent
	add := func(n uint64, flags uint32) {
		if k := len(out) - 1; k >= 0 && out[k].Flags == flags {
			out[k].Length += n
			return
		}
		out = append(out, server.Extent{Length: n, Flags: flags})
	}
	for off < end && len(out) < maxExtents {
		data, err := r.seek(off, unix.SEEK_DATA)
		switch {
		case errors.Is(err, hostfile.ErrNoMoreData):
			data = end // no data after off
		case unsupported(err):
			if len(out) == 0 {
				return []server.Extent{{Length: end - off}}, nil
			}
			return out, nil
		case err != nil:
			return nil, err
		}
		if data > off {
			n := min(data, end) - off
			add(n, server.StateHole|server.StateZero)
			off += n
			if off >= end {
				break
			}
		}
		hole, err := r.seek(off, unix.SEEK_HOLE)
		if err != nil {
			hole = end // treat the rest as data
		}
		if hole <= off {
			hole = off + 1 // the file changed under us; make progress
		}
		n := min(hole, end) - off
		add(n, 0)
		off += n
	}
	if len(out) > maxExtents {
		out = out[:maxExtents] // still a contiguous prefix
	}
	return out, nil
}

func (r *File) seek(off uint64, whence int) (uint64, error) {
	var pos int64
	var err error
	if whence == unix.SEEK_DATA {
		pos, err = r.h.SeekData(int64(off))
	} else {
		pos, err = r.h.SeekHole(int64(off))
	}
	return uint64(pos), err
}

// Cache asks the kernel to read the range ahead (posix_fadvise WILLNEED).
func (r *File) Cache(_ context.Context, off, length uint64) error {
	return unix.Fadvise(int(r.f.Fd()), int64(off), int64(length), unix.FADV_WILLNEED)
}

// Close closes the file. Callers Flush first if they need the data durable.
func (r *File) Close() error { return r.h.Close() }

// unsupported reports what the file system cannot do, under the host-file layer's policy.
func unsupported(err error) bool { return errors.Is(err, hostfile.ErrUnsupported) }
