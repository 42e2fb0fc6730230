// The offset window: size, range translation and the data path (read, write, flush).
package offsetexport

import (
	"context"
	"fmt"
	"syscall"

	"github.com/qnbd/qnbd/server"
)

// sector is what QEMU rounds a node's length up to.
const sector = 512

// TooLargeError refuses an offset past the end of the image, in qemu-nbd's words.
type TooLargeError struct{ Offset, Size uint64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("%s (%d) cannot be greater than size of the containing file (%d)", "Offset", e.Offset, e.Size)
}

// Backend is inner seen from a byte offset.
type Backend struct {
	inner server.Backend
	off   uint64 // where the export starts in inner
	end   uint64 // inner.Size() - off: the export's bytes that inner holds
	size  uint64 // end rounded up to a sector
}

// New returns inner from off on. It fails as qemu-nbd does when off is past inner's end.
func New(inner server.Backend, off uint64) (*Backend, error) {
	n := inner.Size()
	if off > n {
		return nil, &TooLargeError{Offset: off, Size: n}
	}
	end := n - off
	return &Backend{inner: inner, off: off, end: end, size: (end + sector - 1) / sector * sector}, nil
}

// Size is the exported size: what is left after the offset, rounded up to 512 bytes.
func (b *Backend) Size() uint64 { return b.size }

// inside returns how many of the n bytes at off inner holds (the rest is the rounded tail).
func (b *Backend) inside(off, n uint64) uint64 {
	if off >= b.end {
		return 0
	}
	return min(n, b.end-off)
}

// writable fails a change that reaches into the rounded tail.
func (b *Backend) writable(off, n uint64) error {
	if b.inside(off, n) != n {
		return fmt.Errorf("offset export: [%d, +%d) reaches past the image's end at %d: %w", off, n, b.end, syscall.ENOSPC)
	}
	return nil
}

// ReadAt reads from inner, and zeros in the rounded tail.
func (b *Backend) ReadAt(ctx context.Context, p []byte, off uint64) error {
	k := b.inside(off, uint64(len(p)))
	clear(p[k:])
	if k == 0 {
		return nil
	}
	return b.inner.ReadAt(ctx, p[:k], b.off+off)
}

// WriteAt writes to inner at off plus the offset.
func (b *Backend) WriteAt(ctx context.Context, p []byte, off uint64, fua bool) error {
	if err := b.writable(off, uint64(len(p))); err != nil {
		return err
	}
	return b.inner.WriteAt(ctx, p, b.off+off, fua)
}

// Flush flushes inner.
func (b *Backend) Flush(ctx context.Context) error { return b.inner.Flush(ctx) }
