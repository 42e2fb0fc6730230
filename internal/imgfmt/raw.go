// rawDisk: a raw image file (or block device) as a Disk.
package imgfmt

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/qnbd/qnbd/internal/hostfile"
	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/internal/probe"
)

// SectorSize is the unit QEMU's block layer counts raw image sizes in: a raw file's virtual
// size is its length rounded up to a multiple of it, the tail reading as zeros.
const SectorSize = 512

// rawDisk is a raw image. Reads and writes go straight to the file with pread/pwrite.
type rawDisk struct {
	h        *hostfile.File // syncs, fallocate, SEEK_DATA (docs/hostfile.md)
	f        *os.File       // h.OS()
	name     string
	readOnly bool
	noFlush  bool
	// guard is set when the format was guessed rather than given: writes that would make
	// the first sector probe as another format are refused (internal/probe).
	guard *probe.Guard

	mu       sync.RWMutex // guards fileSize against Resize; I/O takes it shared
	fileSize int64        // length of the file in bytes
}

func openRaw(path string, o OpenOptions, probed bool) (*rawDisk, error) {
	h, err := hostfile.Open(path, hostfile.Options{ReadOnly: o.ReadOnly})
	if err != nil {
		return nil, err
	}
	f := h.OS()
	if err := lockFile(f, lockRequest(o), imagelock.RawImage); err != nil {
		return nil, err
	}
	size, err := f.Seek(0, io.SeekEnd) // a block device reports its size only this way
	if err != nil {
		f.Close()
		return nil, err
	}
	d := &rawDisk{h: h, f: f, name: path, readOnly: o.ReadOnly, noFlush: o.NoFlush, fileSize: size}
	if probed {
		d.guard = new(probe.Guard)
	}
	return d, nil
}

func roundUp(n, unit uint64) uint64 { return (n + unit - 1) / unit * unit }

func (d *rawDisk) Format() Format   { return Raw }
func (d *rawDisk) Filename() string { return d.name }

func (d *rawDisk) Size() uint64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return roundUp(uint64(d.fileSize), SectorSize)
}

func (d *rawDisk) checkRange(off int64, n int) error {
	if off < 0 || uint64(off)+uint64(n) > roundUp(uint64(d.fileSize), SectorSize) {
		return fmt.Errorf("request [%d, +%d) beyond the end of the disk: %w", off, n, unix.EINVAL)
	}
	return nil
}

// ReadAt reads p at off; the part of the last sector past the end of the file reads as zeros.
func (d *rawDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.checkRange(off, len(p)); err != nil {
		return 0, err
	}
	n, err := d.f.ReadAt(p, off)
	if err == io.EOF {
		clear(p[n:])
		return len(p), nil
	}
	return n, err
}

// WriteAt writes p at off. A write into the zero tail of a partial last sector grows the file.
func (d *rawDisk) WriteAt(p []byte, off int64) (int, error) {
	if d.readOnly {
		return 0, unix.EBADF
	}
	d.mu.RLock()
	if err := d.checkRange(off, len(p)); err != nil {
		d.mu.RUnlock()
		return 0, err
	}
	if off+int64(len(p)) > d.fileSize {
		d.mu.RUnlock()
		return d.writeGrowing(p, off)
	}
	defer d.mu.RUnlock()
	return d.write(p, off)
}

// writeGrowing is WriteAt for a write that ends past the end of the file.
func (d *rawDisk) writeGrowing(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.checkRange(off, len(p)); err != nil {
		return 0, err
	}
	n, err := d.write(p, off)
	d.fileSize = max(d.fileSize, off+int64(n))
	return n, err
}

// write writes p at off through the block-0 guard of a probed image.
func (d *rawDisk) write(p []byte, off int64) (int, error) {
	var n int
	err := d.guard.Change(d.f, uint64(off), uint64(len(p)), probe.Overlay(p), func() error {
		var err error
		n, err = d.f.WriteAt(p, off)
		return err
	})
	return n, err
}

// WriteZeroes punches a hole where the file system can, and writes zeros where it cannot
// (hostfile.ErrUnsupported).
func (d *rawDisk) WriteZeroes(off, n uint64) error {
	if d.readOnly {
		return unix.EBADF
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := d.checkRange(int64(off), 0); err != nil || off+n > roundUp(uint64(d.fileSize), SectorSize) {
		return fmt.Errorf("zero request [%d, +%d) beyond the end of the disk: %w", off, n, unix.EINVAL)
	}
	end := min(off+n, uint64(d.fileSize))
	if off >= end {
		return nil
	}
	return d.guard.Change(d.f, off, end-off, probe.Zeroed(end-off), func() error {
		err := d.h.PunchHole(int64(off), int64(end-off))
		if errors.Is(err, hostfile.ErrUnsupported) {
			return writeZeros(d.f, off, end-off)
		}
		return err
	})
}

// writeZeros writes n zero bytes at off, a chunk at a time.
func writeZeros(w io.WriterAt, off, n uint64) error {
	buf := make([]byte, min(n, 1<<20))
	for n > 0 {
		c := min(n, uint64(len(buf)))
		if _, err := w.WriteAt(buf[:c], int64(off)); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

// Map reports data and holes as the file system sees them (SEEK_DATA / SEEK_HOLE), each at its
// own offset in the file, as QEMU's file driver does. Without SEEK_DATA everything is data.
func (d *rawDisk) Map(off, n uint64) ([]Extent, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	size := roundUp(uint64(d.fileSize), SectorSize)
	if off > size || n > size-off {
		return nil, fmt.Errorf("map request [%d, +%d) beyond the end of the disk: %w", off, n, unix.EINVAL)
	}
	var out []Extent
	seekMap(d.h, d.fileSize, off, off+n, func(start, end uint64, hole bool) {
		k := KindData
		if hole {
			k = KindZero
		}
		if l := len(out); l > 0 && out[l-1].Kind == k && out[l-1].End() == start {
			out[l-1].Length += end - start
			return
		}
		out = append(out, Extent{Start: start, Length: end - start, Kind: k, HasOffset: true, Offset: start, File: d.name})
	})
	return out, nil
}

// seekMap splits [off, end) of f, whose length is fileSize, into data and hole runs with
// SEEK_DATA / SEEK_HOLE and calls emit for each run in order. Past the end of the file (the
// zero tail of a partial last sector) is a hole. When the file system cannot seek for data,
// everything before the end of the file is data.
func seekMap(h *hostfile.File, fileSize int64, off, end uint64, emit func(start, end uint64, hole bool)) {
	eof := uint64(fileSize)
	for pos := off; pos < end; {
		if pos >= eof {
			emit(pos, end, true)
			return
		}
		data, err := h.SeekData(int64(pos))
		switch {
		case errors.Is(err, hostfile.ErrNoMoreData):
			emit(pos, end, true) // no data from pos to the end of the file
			return
		case err != nil:
			next := min(eof, end)
			emit(pos, next, false)
			pos = next
			continue
		}
		if uint64(data) > pos {
			next := min(uint64(data), end)
			emit(pos, next, true)
			pos = next
			continue
		}
		hole, err := h.SeekHole(int64(pos))
		if err != nil || hole <= int64(pos) || hole > fileSize {
			hole = fileSize
		}
		next := min(uint64(hole), end)
		emit(pos, next, false)
		pos = next
	}
}

// Resize sets the file length. Growing with falloc or full preallocation reserves or writes
// the new part; shrinking drops the tail.
func (d *rawDisk) Resize(size uint64, prealloc Prealloc) error {
	if d.readOnly {
		return unix.EBADF
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := truncateRaw(d.h, d.fileSize, int64(size), prealloc); err != nil {
		return err
	}
	d.fileSize = int64(size)
	return nil
}

// truncateRaw grows or shrinks f from cur to size bytes with the given preallocation for the
// grown part, as QEMU's raw_regular_truncate does: off extends sparsely (and, for a file grown
// from empty, writes its first block so that later alignment probing finds it allocated),
// falloc reserves with fallocate, full writes zeros.
func truncateRaw(h *hostfile.File, cur, size int64, prealloc Prealloc) error {
	f := h.OS()
	if size < cur && prealloc != PreallocOff && prealloc != "" {
		return errors.New("preallocation can only be used for growing images")
	}
	switch prealloc {
	case PreallocOff, "":
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("could not resize file: %w", err)
		}
		if cur == 0 && size > 0 {
			allocateFirstBlock(f, size)
		}
	case PreallocFalloc:
		if size > cur {
			if err := h.Allocate(cur, size-cur); err != nil {
				return fmt.Errorf("could not preallocate new data: %w", err)
			}
		}
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("could not resize file: %w", err)
		}
	case PreallocFull:
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("could not resize file: %w", err)
		}
		if size > cur {
			if err := writeZeros(f, uint64(cur), uint64(size-cur)); err != nil {
				return fmt.Errorf("could not write zeros for preallocation: %w", err)
			}
		}
	default:
		return fmt.Errorf("unsupported preallocation mode: %s", prealloc)
	}
	return nil
}

// allocateFirstBlock writes zeros over the start of a new file (512 bytes, or 4096 when the
// file is at least that long), as QEMU does after creating a raw file; failures are ignored.
func allocateFirstBlock(f *os.File, size int64) {
	n := int64(512)
	if size >= 4096 {
		n = 4096
	}
	_, _ = f.WriteAt(make([]byte, n), 0)
}

func (d *rawDisk) Flush() error {
	if d.readOnly || d.noFlush {
		return nil
	}
	return d.h.Sync()
}

func (d *rawDisk) Close() error {
	err := d.Flush()
	if cerr := d.h.Close(); err == nil {
		err = cerr
	}
	return err
}
