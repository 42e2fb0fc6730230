// Storage: the byte store under an image (the image file, an external data file, a backing file).
package qcow2

import (
	"io"
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

// zeroRanger is implemented by stores that can make a byte range read as zeros without writing
// it, keeping it allocated (fallocate ZERO_RANGE). Like QEMU (handle_alloc_space), the engine
// uses it for the copy-on-write parts of a newly allocated cluster that read as zeros.
type zeroRanger interface {
	ZeroRange(off, n int64) error
}

// Preallocator is implemented by stores that can reserve space without writing it
// (fallocate), used for preallocation=falloc.
type Preallocator interface {
	Allocate(off, n int64) error
}

// allocationFinder is implemented by stores that can tell data from holes (lseek SEEK_DATA and
// SEEK_HOLE), which QEMU's file driver reports in block status.
type allocationFinder interface {
	// FindAllocation answers for off inside the store: data == off and hole > off (the next
	// hole, or the end of the store) when off holds data; hole == off and data > off (the next
	// data) when off is in a hole; errNoMoreData when no data lies at or after off.
	FindAllocation(off int64) (data, hole int64, err error)
}

// allocatedSizer is implemented by stores that know how many bytes they occupy on disk
// (st_blocks), which QEMU's metadata-preallocation heuristic compares with the refcounts.
type allocatedSizer interface {
	AllocatedBytes() (int64, error)
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
	// roleImage is the image file Open was given.
	roleImage FileRole = iota
	// RoleBacking is a backing file (qcow2 or raw, at any depth), opened read-only.
	RoleBacking
	// RoleDataFile is an external data file.
	RoleDataFile
)
