// Direct I/O host files (cache=none, directsync): O_DIRECT behind aligning reads and writes.
package qcow2export

import (
	"errors"
	"io"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/qnbd/qnbd/qcow2"
)

// DirectAlign is the alignment of every O_DIRECT transfer: offset, length and buffer address.
// 4 KiB is a multiple of every logical block size Linux file systems and disks use, so it is
// valid everywhere QEMU's probing would find 512 or 4096.
const DirectAlign = 4096

// directStripes is the number of locks guarding read-modify-write of edge blocks.
const directStripes = 64

// DirectOpener opens host files with O_DIRECT, for qcow2.OpenOptions.Opener. The engine reads
// and writes at any offset and length (an 8-byte L1 entry, a 512-byte cluster); the Storage
// it returns turns each request into aligned transfers.
func DirectOpener(path string, o qcow2.FileOptions) (qcow2.Storage, error) {
	flags := os.O_RDWR | unix.O_DIRECT
	if o.ReadOnly {
		flags = os.O_RDONLY | unix.O_DIRECT
	}
	if o.Create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, err
	}
	return &directFile{f: f, noSync: o.NoSync}, nil
}

// directFile is a Storage over a file opened with O_DIRECT.
//
// A read covers the aligned blocks around the request and copies out. An aligned write from
// an aligned buffer goes straight to the file; any other write reads the blocks it only partly
// covers (its first and last), patches them and writes the whole aligned span. Two writers on
// disjoint ranges may share such an edge block, so the read-modify-write of an edge block
// runs under that block's stripe lock, which every partial writer of the block takes: the
// second writer reads the first one's bytes. A write that covers a block entirely never
// shares it with a concurrent writer (the ranges would overlap), so it needs no lock.
//
// Writes past the end of the file grow it to a whole block; the tail beyond what the engine
// wrote reads as zeros, like any file growth.
type directFile struct {
	f      *os.File
	noSync bool
	stripe [directStripes]sync.Mutex
}

// File returns the O_DIRECT file, so that image locks can sit on it (imagelock.FileHolder).
func (d *directFile) File() *os.File { return d.f }

// alignedBuf returns a zeroed n-byte buffer whose first byte is DirectAlign-aligned.
func alignedBuf(n int) []byte {
	b := make([]byte, n+DirectAlign)
	skip := int(-uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (DirectAlign - 1))
	return b[skip : skip+n : skip+n]
}

func isAligned(p []byte, off int64) bool {
	return off%DirectAlign == 0 && len(p)%DirectAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(p)))%DirectAlign == 0
}

// preadDirect reads into the aligned p at the aligned off until p is full or the file ends;
// it returns the bytes read (io.EOF with fewer than len(p)).
func (d *directFile) preadDirect(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pread(int(d.f.Fd()), p[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, &os.PathError{Op: "read", Path: d.f.Name(), Err: err}
		}
		done += n
		// A short transfer ends at the end of the file (an aligned remainder may still
		// follow after a signal; an unaligned one cannot be continued with O_DIRECT).
		if n == 0 || n%DirectAlign != 0 {
			return done, io.EOF
		}
	}
	return done, nil
}

func (d *directFile) pwriteDirect(p []byte, off int64) error {
	for done := 0; done < len(p); {
		n, err := unix.Pwrite(int(d.f.Fd()), p[done:], off+int64(done))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "write", Path: d.f.Name(), Err: err}
		}
		if n == 0 || n%DirectAlign != 0 {
			return &os.PathError{Op: "write", Path: d.f.Name(), Err: io.ErrShortWrite}
		}
		done += n
	}
	return nil
}

// ReadAt reads len(p) bytes at off; past the end of the file it returns io.EOF, as
// os.File.ReadAt does.
func (d *directFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &os.PathError{Op: "read", Path: d.f.Name(), Err: unix.EINVAL}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if isAligned(p, off) {
		return d.preadDirect(p, off)
	}
	start := off &^ (DirectAlign - 1)
	end := (off + int64(len(p)) + DirectAlign - 1) &^ (DirectAlign - 1)
	buf := alignedBuf(int(end - start))
	n, err := d.preadDirect(buf, start)
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

// WriteAt writes p at off.
func (d *directFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &os.PathError{Op: "write", Path: d.f.Name(), Err: unix.EINVAL}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if isAligned(p, off) {
		if err := d.pwriteDirect(p, off); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	start := off &^ (DirectAlign - 1)
	end := (off + int64(len(p)) + DirectAlign - 1) &^ (DirectAlign - 1)
	first, last := start/DirectAlign, end/DirectAlign-1
	// The blocks the write covers only in part: its first and its last (one block when the
	// write lies inside one).
	var partial []int64
	if off != start {
		partial = append(partial, first)
	}
	if off+int64(len(p)) != end && (len(partial) == 0 || last != first) {
		partial = append(partial, last)
	}
	// Their stripe locks, each once, in index order.
	var locks []int
	for _, blk := range partial {
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
	defer func() {
		for _, s := range locks {
			d.stripe[s].Unlock()
		}
	}()
	buf := alignedBuf(int(end - start))
	for _, blk := range partial {
		at := (blk - first) * DirectAlign
		n, err := d.preadDirect(buf[at:at+DirectAlign], blk*DirectAlign)
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		// Past the end of the file the block is zeros, whatever the transfer left there.
		clear(buf[at+int64(n) : at+DirectAlign])
	}
	copy(buf[off-start:], p)
	if err := d.pwriteDirect(buf, start); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Sync flushes written data to stable storage with fdatasync (a no-op for cache=unsafe).
// O_DIRECT bypasses the page cache but not the disk's volatile cache, so Sync still matters.
func (d *directFile) Sync() error {
	if d.noSync {
		return nil
	}
	if err := unix.Fdatasync(int(d.f.Fd())); err != nil {
		return &os.PathError{Op: "fdatasync", Path: d.f.Name(), Err: err}
	}
	return nil
}

// Size returns the file's length (seeking to the end for a block device).
func (d *directFile) Size() (int64, error) {
	fi, err := d.f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode().IsRegular() {
		return fi.Size(), nil
	}
	return d.f.Seek(0, io.SeekEnd)
}

// Truncate sets the file's length.
func (d *directFile) Truncate(size int64) error { return d.f.Truncate(size) }

// Close closes the file.
func (d *directFile) Close() error { return d.f.Close() }

// PunchHole deallocates [off, off+n) keeping the file size (qcow2.HolePuncher).
func (d *directFile) PunchHole(off, n int64) error {
	err := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return qcow2.ErrNotSupported
	}
	return err
}

// Allocate reserves [off, off+n), growing the file if needed (qcow2.Preallocator).
func (d *directFile) Allocate(off, n int64) error {
	err := unix.Fallocate(int(d.f.Fd()), 0, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return qcow2.ErrNotSupported
	}
	return err
}
