// FileStorage: a Storage over a host file, through the one host-file layer (internal/hostfile).
package qcow2

import (
	"errors"
	"fmt"
	"os"

	"github.com/qnbd/qnbd/internal/hostfile"
)

// FileStorage is a Storage over a host file. Every sync, fallocate and lseek goes through
// internal/hostfile, whose error policy it inherits (docs/hostfile.md): what the file system
// cannot do is ErrUnsupported here. Opened with FileOptions.Direct, its reads and writes are
// aligned for O_DIRECT (storage_direct.go).
type FileStorage struct {
	h *hostfile.File
	// noSync turns Sync into a no-op (cache=unsafe).
	noSync bool
	dio    *directIO // nil without O_DIRECT
}

// OpenFile opens path as a Storage.
func OpenFile(path string, o FileOptions) (*FileStorage, error) {
	h, err := hostfile.Open(path, hostfile.Options{ReadOnly: o.ReadOnly, Create: o.Create, Direct: o.Direct})
	if err != nil {
		return nil, err
	}
	s := &FileStorage{h: h, noSync: o.NoSync}
	if o.Direct {
		s.dio = newDirectIO(h.OS())
	}
	return s, nil
}

// NewFileStorage wraps an already open file.
func NewFileStorage(f *os.File) *FileStorage { return &FileStorage{h: hostfile.New(f)} }

// DirectAlign is the alignment O_DIRECT transfers on the file use (offset, length and buffer
// address), 0 when it was not opened with FileOptions.Direct.
func (s *FileStorage) DirectAlign() int {
	if s.dio == nil {
		return 0
	}
	return int(s.dio.align)
}

// File returns the underlying file.
func (s *FileStorage) File() *os.File { return s.h.OS() }

// host returns the host-file layer under the storage: its sync count and open flags.
func (s *FileStorage) host() *hostfile.File { return s.h }

// ReadAt reads len(p) bytes at off; reading past the end of the file returns io.EOF.
func (s *FileStorage) ReadAt(p []byte, off int64) (int, error) {
	if s.dio != nil {
		return s.dio.readAt(s.h.OS(), p, off)
	}
	return s.h.OS().ReadAt(p, off)
}

// WriteAt writes p at off.
func (s *FileStorage) WriteAt(p []byte, off int64) (int, error) {
	if s.dio != nil {
		return s.dio.writeAt(s.h.OS(), p, off)
	}
	return s.h.OS().WriteAt(p, off)
}

// Sync flushes written data to stable storage with fdatasync; a no-op with FileOptions.NoSync.
func (s *FileStorage) Sync() error {
	if s.noSync {
		return nil
	}
	return s.h.Sync()
}

// Size returns the file's length (a block device's real size: go-nbd#8).
func (s *FileStorage) Size() (int64, error) { return s.h.Size() }

// Truncate sets the file's length.
func (s *FileStorage) Truncate(size int64) error { return s.h.OS().Truncate(size) }

// Close closes the file.
func (s *FileStorage) Close() error { return s.h.Close() }

// PunchHole deallocates [off, off+n) keeping the file size; the range reads back as zeros.
func (s *FileStorage) PunchHole(off, n int64) error {
	if s.dio != nil {
		defer s.dio.lockRange(off, n)()
	}
	return storageErr(s.h.PunchHole(off, n))
}

// Allocate reserves [off, off+n), growing the file if needed.
func (s *FileStorage) Allocate(off, n int64) error { return storageErr(s.h.Allocate(off, n)) }

// FindAllocation reports data and holes with lseek SEEK_DATA / SEEK_HOLE, as QEMU's
// find_allocation does (allocationFinder).
func (s *FileStorage) FindAllocation(off int64) (data, hole int64, err error) {
	data, hole, err = s.h.FindAllocation(off)
	return data, hole, storageErr(err)
}

// AllocatedBytes is the file's allocated size (st_blocks * 512), as QEMU's
// bdrv_get_allocated_file_size reports it (allocatedSizer).
func (s *FileStorage) AllocatedBytes() (int64, error) { return s.h.AllocatedBytes() }

// ZeroRange makes [off, off+n) read as zeros with fallocate ZERO_RANGE, growing the file if
// needed (zeroRanger); ErrUnsupported where the file system cannot.
func (s *FileStorage) ZeroRange(off, n int64) error {
	if s.dio != nil {
		defer s.dio.lockRange(off, n)()
	}
	return storageErr(s.h.ZeroRange(off, n))
}

// storageErr gives the host-file layer's classes the engine's names: what the file system
// cannot do is ErrUnsupported, no data ahead is errNoMoreData.
func storageErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, hostfile.ErrNoMoreData):
		return errNoMoreData
	case errors.Is(err, hostfile.ErrUnsupported):
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return err
}
