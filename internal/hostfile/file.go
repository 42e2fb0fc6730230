// File: an open host file, its open flags and its sync count.
package hostfile

import (
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Options select how Open opens a file.
type Options struct {
	// ReadOnly opens O_RDONLY, else O_RDWR.
	ReadOnly bool
	// Create creates the file, which must not exist (O_CREAT|O_EXCL), with mode 0644.
	Create bool
	// Direct opens with O_DIRECT (cache=none, cache=directsync); the caller aligns transfers.
	Direct bool
}

// File is an open host file. Reads and writes go through OS (pread/pwrite of *os.File); the
// operations the file system may refuse, and syncs, go through the File.
type File struct {
	f     *os.File
	syncs atomic.Uint64

	// Fallocate modes the file system refused (see the error policy in doc.go).
	noPunch, noZeroRange, noAllocate atomic.Bool
}

// Open opens path. It never adds O_SYNC or O_DSYNC: durability is Sync's job
// (docs/hostfile.md).
func Open(path string, o Options) (*File, error) {
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
	return &File{f: f}, nil
}

// New wraps an already open file; the File owns it from then on.
func New(f *os.File) *File { return &File{f: f} }

// OS returns the underlying file, for pread/pwrite, truncation and image locks (which must
// sit on the descriptor that does the I/O).
func (h *File) OS() *os.File { return h.f }

// Name is the path the file was opened with.
func (h *File) Name() string { return h.f.Name() }

func (h *File) fd() int { return int(h.f.Fd()) }

// Flags returns the descriptor's status flags as the kernel reports them (fcntl F_GETFL):
// the access mode, O_DIRECT, O_SYNC, O_DSYNC.
func (h *File) Flags() (int, error) {
	fl, err := unix.FcntlInt(h.f.Fd(), unix.F_GETFL, 0)
	if err != nil {
		return 0, pathError("fcntl", h.Name(), err)
	}
	return fl, nil
}

// Syncs is the number of Sync calls that reached the kernel (fdatasync), failed ones included.
func (h *File) Syncs() uint64 { return h.syncs.Load() }

// Sync makes every completed write durable with fdatasync, and counts it.
func (h *File) Sync() error {
	h.syncs.Add(1)
	if err := retry(func() error { return unix.Fdatasync(h.fd()) }); err != nil {
		return pathError("fdatasync", h.Name(), err)
	}
	return nil
}

// Size is the file's length. A block device has no length in stat, so it is sought
// (SEEK_END).
func (h *File) Size() (int64, error) {
	fi, err := h.f.Stat()
	if err != nil {
		return 0, err
	}
	if fi.Mode().IsRegular() {
		return fi.Size(), nil
	}
	return h.f.Seek(0, io.SeekEnd)
}

// AllocatedBytes is the space the file occupies on disk (st_blocks * 512), as QEMU's
// bdrv_get_allocated_file_size reports it.
func (h *File) AllocatedBytes() (int64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(h.fd(), &st); err != nil {
		return 0, pathError("fstat", h.Name(), err)
	}
	return st.Blocks * 512, nil
}

// Close closes the file.
func (h *File) Close() error { return h.f.Close() }
