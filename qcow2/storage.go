// Storage: the byte store under an image (the image file, an external data file, a backing file).
package qcow2

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Storage is everything the engine asks of a host file. All image I/O goes through it, so a
// test can substitute an in-memory store that simulates crashes or injects errors.
//
// Implementations must allow concurrent ReadAt and WriteAt calls on disjoint ranges, as
// *os.File does (pread/pwrite).
type Storage interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes every completed WriteAt durable (fdatasync).
	Sync() error
	// Size is the current length of the store in bytes.
	Size() (int64, error)
	// Truncate sets the length of the store; growing it reads back as zeros.
	Truncate(size int64) error
	// Close releases the store.
	Close() error
}

// HolePuncher is implemented by stores that can deallocate a byte range so that it reads back
// as zeros (fallocate PUNCH_HOLE). The engine uses it when freeing clusters and for zero writes
// over clusters it keeps; without it, it writes zeros where zeros must be read.
type HolePuncher interface {
	PunchHole(off, n int64) error
}

// ZeroRanger is implemented by stores that can make a byte range read as zeros without writing
// it, keeping it allocated (fallocate ZERO_RANGE). Like QEMU (handle_alloc_space), the engine
// uses it for the copy-on-write parts of a newly allocated cluster that read as zeros.
type ZeroRanger interface {
	ZeroRange(off, n int64) error
}

// Preallocator is implemented by stores that can reserve space without writing it
// (fallocate), used for preallocation=falloc.
type Preallocator interface {
	Allocate(off, n int64) error
}

// AllocationFinder is implemented by stores that can tell data from holes (lseek SEEK_DATA and
// SEEK_HOLE), which QEMU's file driver reports in block status.
type AllocationFinder interface {
	// FindAllocation answers for off inside the store: data == off and hole > off (the next
	// hole, or the end of the store) when off holds data; hole == off and data > off (the next
	// data) when off is in a hole; ErrNoMoreData when no data lies at or after off.
	FindAllocation(off int64) (data, hole int64, err error)
}

// ErrNoMoreData is FindAllocation's answer for a hole that runs to the end of the store.
var ErrNoMoreData = errors.New("qcow2: no data at or after this offset")

// AllocatedSizer is implemented by stores that know how many bytes they occupy on disk
// (st_blocks), which QEMU's metadata-preallocation heuristic compares with the refcounts.
type AllocatedSizer interface {
	AllocatedBytes() (int64, error)
}

// ErrNotSupported is returned by optional Storage methods the underlying file system lacks.
var ErrNotSupported = errors.New("qcow2: operation not supported by the storage")

// FileStorage is a Storage over an *os.File. Opened with FileOptions.Direct, its reads and
// writes are aligned for O_DIRECT (storage_direct.go).
type FileStorage struct {
	f *os.File
	// noSync turns Sync into a no-op (cache=unsafe).
	noSync bool
	dio    *directIO // nil without O_DIRECT
}

// FileOptions select how OpenFile opens a host file.
type FileOptions struct {
	// ReadOnly opens the file O_RDONLY.
	ReadOnly bool
	// Direct opens the file with O_DIRECT (cache=none, cache=directsync); reads and writes
	// are then aligned to the file's logical block size, which OpenFile detects.
	Direct bool
	// NoSync turns Sync into a no-op (cache=unsafe).
	NoSync bool
	// Create creates the file if it does not exist (O_CREATE|O_EXCL).
	Create bool
	// Role is the part the file plays in the image, set by the engine when it opens a file
	// (for an Opener that treats them differently, such as one taking image locks).
	Role FileRole
}

// FileRole is the part a host file plays in an open image.
type FileRole int

const (
	// RoleImage is the image file Open was given.
	RoleImage FileRole = iota
	// RoleBacking is a backing file (qcow2 or raw, at any depth), opened read-only.
	RoleBacking
	// RoleDataFile is an external data file.
	RoleDataFile
)

// OpenFile opens path as a Storage.
func OpenFile(path string, o FileOptions) (*FileStorage, error) {
	flags := os.O_RDWR
	if o.ReadOnly {
		flags = os.O_RDONLY
	}
	if o.Create {
		flags |= os.O_CREATE | os.O_EXCL
	}
	if o.Direct {
		flags |= unix.O_DIRECT
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return nil, err
	}
	s := &FileStorage{f: f, noSync: o.NoSync}
	if o.Direct {
		s.dio = newDirectIO(f)
	}
	return s, nil
}

// DirectAlign is the alignment O_DIRECT transfers on the file use (offset, length and buffer
// address), 0 when it was not opened with FileOptions.Direct.
func (s *FileStorage) DirectAlign() int {
	if s.dio == nil {
		return 0
	}
	return int(s.dio.align)
}

// NewFileStorage wraps an already open file.
func NewFileStorage(f *os.File) *FileStorage { return &FileStorage{f: f} }

// File returns the underlying file.
func (s *FileStorage) File() *os.File { return s.f }

// ReadAt reads len(p) bytes at off; reading past the end of the file returns io.EOF.
func (s *FileStorage) ReadAt(p []byte, off int64) (int, error) {
	if s.dio != nil {
		return s.dio.readAt(s.f, p, off)
	}
	return s.f.ReadAt(p, off)
}

// WriteAt writes p at off.
func (s *FileStorage) WriteAt(p []byte, off int64) (int, error) {
	if s.dio != nil {
		return s.dio.writeAt(s.f, p, off)
	}
	return s.f.WriteAt(p, off)
}

// Sync flushes written data to stable storage with fdatasync.
func (s *FileStorage) Sync() error {
	if s.noSync {
		return nil
	}
	if err := unix.Fdatasync(int(s.f.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", s.f.Name(), err)
	}
	return nil
}

// Size returns the file's length. It seeks rather than stats, so a block device reports its
// real size (go-nbd#8).
func (s *FileStorage) Size() (int64, error) {
	fi, err := s.f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode().IsRegular() {
		return fi.Size(), nil
	}
	return s.f.Seek(0, io.SeekEnd)
}

// Truncate sets the file's length.
func (s *FileStorage) Truncate(size int64) error { return s.f.Truncate(size) }

// Close closes the file.
func (s *FileStorage) Close() error { return s.f.Close() }

// PunchHole deallocates [off, off+n) keeping the file size; the range reads back as zeros.
func (s *FileStorage) PunchHole(off, n int64) error {
	if s.dio != nil {
		defer s.dio.lockRange(off, n)()
	}
	err := unix.Fallocate(int(s.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return ErrNotSupported
	}
	return err
}

// Allocate reserves [off, off+n), growing the file if needed.
func (s *FileStorage) Allocate(off, n int64) error {
	err := unix.Fallocate(int(s.f.Fd()), 0, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return ErrNotSupported
	}
	return err
}

// FindAllocation reports data and holes with lseek SEEK_DATA / SEEK_HOLE, as QEMU's
// find_allocation does (AllocationFinder).
func (s *FileStorage) FindAllocation(off int64) (data, hole int64, err error) {
	return findAllocation(s.f, off)
}

// findAllocation is QEMU's find_allocation over an open file: SEEK_DATA first; in data,
// SEEK_HOLE for its end.
func findAllocation(f *os.File, off int64) (data, hole int64, err error) {
	fd := int(f.Fd())
	d, err := unix.Seek(fd, off, unix.SEEK_DATA)
	if errors.Is(err, unix.ENXIO) {
		return 0, 0, ErrNoMoreData
	}
	if err != nil {
		return 0, 0, err
	}
	if d < off {
		return 0, 0, fmt.Errorf("lseek SEEK_DATA at %d returned %d", off, d)
	}
	if d > off {
		return d, off, nil
	}
	h, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil {
		return 0, 0, err
	}
	if h <= off {
		return 0, 0, fmt.Errorf("lseek SEEK_HOLE at %d returned %d", off, h)
	}
	return off, h, nil
}

// AllocatedBytes is the file's allocated size (st_blocks * 512), as QEMU's
// bdrv_get_allocated_file_size reports it (AllocatedSizer).
func (s *FileStorage) AllocatedBytes() (int64, error) { return allocatedBytes(s.f) }

func allocatedBytes(f *os.File) (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, err
	}
	return st.Blocks * 512, nil
}

// ZeroRange makes [off, off+n) read as zeros with fallocate ZERO_RANGE, growing the file if
// needed (ZeroRanger); ErrNotSupported where the file system cannot.
func (s *FileStorage) ZeroRange(off, n int64) error {
	if s.dio != nil {
		defer s.dio.lockRange(off, n)()
	}
	return zeroRange(s.f, off, n)
}

func zeroRange(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_ZERO_RANGE, off, n)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) {
		return ErrNotSupported
	}
	return err
}
