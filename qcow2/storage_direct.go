// O_DIRECT host files (cache=none, directsync): every transfer aligned to the file's logical
// block size, unaligned writes done as locked read-modify-write of their edge blocks.
package qcow2

import (
	"errors"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directStripes is the number of locks guarding read-modify-write of edge blocks.
const directStripes = 64

// maxDirectAlign bounds the alignment probed or reported (QEMU's MAX_BLOCKSIZE).
const maxDirectAlign = 4096

// directIO does a FileStorage's reads and writes when it was opened with O_DIRECT, which
// needs the offset, the length and the buffer address of every transfer aligned. The engine
// reads and writes at any offset and length (an 8-byte L1 entry, a 105-byte header, a
// 512-byte cluster), so:
//
//   - a read covers the aligned blocks around the request and copies out;
//   - an aligned write from an aligned buffer goes straight to the file; any other write
//     reads the blocks it only partly covers (its first and last), patches them and writes
//     the whole aligned span. Two writers on disjoint ranges may share such an edge block,
//     so the read-modify-write of an edge block runs under that block's stripe lock, which
//     every partial writer of the block takes; a write that covers a block entirely never
//     shares it with a concurrent writer (the ranges would overlap), so it needs no lock.
//   - PunchHole and ZeroRange change bytes without writeAt: they take the stripe locks of the
//     blocks they cover in part, or a read-modify-write racing with them could write the old
//     bytes back over the range they cleared.
//
// Writes past the end of the file grow it to a whole block; the tail beyond what the engine
// wrote reads as zeros, like any file growth (QEMU pads the same way).
type directIO struct {
	align    int64 // offset and length alignment: the logical block size
	memAlign uintptr
	stripe   [directStripes]sync.Mutex
}

// newDirectIO finds the alignment O_DIRECT needs on f, as QEMU's raw_probe_alignment does:
// the block device's logical block size (BLKSSZGET), else what the kernel reports for the
// file (statx STATX_DIOALIGN), else the smallest of 512..4096 a read at offset 0 accepts,
// else 4096.
func newDirectIO(f *os.File) *directIO {
	fd := int(f.Fd())
	align, mem := int64(0), uintptr(0)
	var st unix.Stat_t
	if unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
		if n, err := unix.IoctlGetInt(fd, unix.BLKSSZGET); err == nil && n > 0 {
			align = int64(n)
		}
	}
	if align == 0 {
		var stx unix.Statx_t
		if unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx) == nil &&
			stx.Mask&unix.STATX_DIOALIGN != 0 && stx.Dio_offset_align != 0 {
			align, mem = int64(stx.Dio_offset_align), uintptr(stx.Dio_mem_align)
		}
	}
	if align == 0 {
		buf := alignedBuf(maxDirectAlign, maxDirectAlign)
		for _, a := range []int64{512, 1024, 2048, 4096} {
			if _, err := unix.Pread(fd, buf[:a], 0); !errors.Is(err, unix.EINVAL) {
				align = a
				break
			}
		}
	}
	if align <= 0 || align > maxDirectAlign || align&(align-1) != 0 {
		align = maxDirectAlign
	}
	if mem == 0 || mem > maxDirectAlign || mem&(mem-1) != 0 {
		mem = uintptr(align)
	}
	return &directIO{align: align, memAlign: max(mem, uintptr(align))}
}

// alignedBuf returns a zeroed n-byte buffer whose first byte is aligned to a (a power of 2).
func alignedBuf(n int, a uintptr) []byte {
	b := make([]byte, n+int(a))
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (a - 1))
	return b[skip : skip+n : skip+n]
}

func (d *directIO) aligned(p []byte, off int64) bool {
	return off%d.align == 0 && int64(len(p))%d.align == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%d.memAlign == 0
}

// pread reads into the aligned p at the aligned off until p is full or the file ends; it
// returns the bytes read (io.EOF with fewer than len(p)).
func (d *directIO) pread(f *os.File, p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pread(int(f.Fd()), p[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, &os.PathError{Op: "read", Path: f.Name(), Err: err}
		}
		done += n
		// A short transfer ends at the end of the file (an aligned remainder may still
		// follow after a signal; an unaligned one cannot be continued with O_DIRECT).
		if n == 0 || int64(n)%d.align != 0 {
			return done, io.EOF
		}
	}
	return done, nil
}

func (d *directIO) pwrite(f *os.File, p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := unix.Pwrite(int(f.Fd()), p[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "write", Path: f.Name(), Err: err}
		}
		if n == 0 || int64(n)%d.align != 0 {
			return &os.PathError{Op: "write", Path: f.Name(), Err: io.ErrShortWrite}
		}
		done += n
	}
	return nil
}

// partialBlocks returns the blocks [off, off+n) covers only in part: its first and its last
// (one block when the range lies inside one), none when it is aligned.
func (d *directIO) partialBlocks(off, n int64) []int64 {
	a := d.align
	start := off / a * a
	end := (off + n + a - 1) / a * a
	first, last := start/a, end/a-1
	var partial []int64
	if off != start {
		partial = append(partial, first)
	}
	if off+n != end && (len(partial) == 0 || last != first) {
		partial = append(partial, last)
	}
	return partial
}

// lockBlocks takes the stripe locks of blocks (each stripe once, in index order) and returns
// the function that releases them.
func (d *directIO) lockBlocks(blocks []int64) func() {
	var locks []int
	for _, blk := range blocks {
		s := int(blk % directStripes)
		if len(locks) == 1 && locks[0] == s {
			continue
		}
		locks = append(locks, s)
	}
	if len(locks) == 2 && locks[1] < locks[0] {
		locks[0], locks[1] = locks[1], locks[0]
	}
	for _, s := range locks {
		d.stripe[s].Lock()
	}
	return func() {
		for _, s := range locks {
			d.stripe[s].Unlock()
		}
	}
}

// lockRange serializes a change of [off, off+n) that does not go through writeAt (fallocate
// PUNCH_HOLE, ZERO_RANGE) with the read-modify-writes of the blocks it covers in part: one
// that read such a block before the change and wrote it back after would undo the change in
// the bytes it did not own.
func (d *directIO) lockRange(off, n int64) func() {
	if n <= 0 {
		return func() {}
	}
	return d.lockBlocks(d.partialBlocks(off, n))
}

// readAt reads len(p) bytes at off; past the end of the file it returns io.EOF, as
// os.File.ReadAt does.
func (d *directIO) readAt(f *os.File, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &os.PathError{Op: "read", Path: f.Name(), Err: unix.EINVAL}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if d.aligned(p, off) {
		return d.pread(f, p, off)
	}
	start := off / d.align * d.align
	end := (off + int64(len(p)) + d.align - 1) / d.align * d.align
	buf := alignedBuf(int(end-start), d.memAlign)
	n, err := d.pread(f, buf, start)
	copied := 0
	if skip := int(off - start); n > skip {
		copied = copy(p, buf[skip:n])
	}
	if copied == len(p) {
		return copied, nil
	}
	if err == nil {
		err = io.EOF
	}
	return copied, err
}

// writeAt writes p at off.
func (d *directIO) writeAt(f *os.File, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &os.PathError{Op: "write", Path: f.Name(), Err: unix.EINVAL}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if d.aligned(p, off) {
		if err := d.pwrite(f, p, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	a := d.align
	start := off / a * a
	end := (off + int64(len(p)) + a - 1) / a * a
	first := start / a
	partial := d.partialBlocks(off, int64(len(p)))
	defer d.lockBlocks(partial)()
	buf := alignedBuf(int(end-start), d.memAlign)
	for _, blk := range partial {
		at := (blk - first) * a
		n, err := d.pread(f, buf[at:at+a], blk*a)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		// Past the end of the file the block is zeros, whatever the transfer left there.
		clear(buf[at+int64(n) : at+a])
	}
	copy(buf[off-start:], p)
	if err := d.pwrite(f, buf, start); err != nil {
		return 0, err
	}
	return len(p), nil
}
