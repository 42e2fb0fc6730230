// The optional server interfaces, passed through with the offset, or emulated as the server
// does when inner lacks them.
package offsetexport

import (
	"context"
	"syscall"

	"github.com/qnbd/qnbd/server"
)

var (
	_ server.Trimmer       = (*Backend)(nil)
	_ server.Zeroer        = (*Backend)(nil)
	_ server.Cacher        = (*Backend)(nil)
	_ server.BlockStatuser = (*Backend)(nil)
	_ server.ReadSplitter  = (*Backend)(nil)
	_ server.DepthStatuser = (*Backend)(nil)
)

// zeros is the source of emulated write-zeroes.
var zeros = make([]byte, 1<<20)

// Trim discards in inner, or does nothing when inner cannot.
func (b *Backend) Trim(ctx context.Context, off, n uint64, fua bool) error {
	if err := b.writable(off, n); err != nil {
		return err
	}
	if t, ok := b.inner.(server.Trimmer); ok {
		return t.Trim(ctx, b.off+off, n, fua)
	}
	return nil
}

// WriteZeroes zeroes in inner, writing zeros itself when inner has no Zeroer.
func (b *Backend) WriteZeroes(ctx context.Context, off, n uint64, f server.ZeroFlags) error {
	if err := b.writable(off, n); err != nil {
		return err
	}
	if z, ok := b.inner.(server.Zeroer); ok {
		return z.WriteZeroes(ctx, b.off+off, n, f)
	}
	if f.FastZero {
		return syscall.ENOTSUP
	}
	for end := off + n; off < end; {
		k := min(end-off, uint64(len(zeros)))
		if err := b.inner.WriteAt(ctx, zeros[:k], b.off+off, f.FUA); err != nil {
			return err
		}
		off += k
	}
	return nil
}

// Cache prefetches in inner, or does nothing.
func (b *Backend) Cache(ctx context.Context, off, n uint64) error {
	c, ok := b.inner.(server.Cacher)
	if k := b.inside(off, n); ok && k > 0 {
		return c.Cache(ctx, b.off+off, k)
	}
	return nil
}

// extents answers one block-status question: from inner inside it (whole range as data,
// flags none, when get is nil), a zero hole in the rounded tail.
func (b *Backend) extents(ctx context.Context, off, n uint64, none uint32,
	get func(context.Context, uint64, uint64) ([]server.Extent, error)) ([]server.Extent, error) {
	k := b.inside(off, n)
	switch {
	case k == 0:
		return []server.Extent{{Length: n, Flags: server.StateHole | server.StateZero}}, nil
	case get == nil:
		return []server.Extent{{Length: k, Flags: none}}, nil
	}
	return get(ctx, b.off+off, k)
}

// Allocation is inner's base:allocation from the offset on.
func (b *Backend) Allocation(ctx context.Context, off, n uint64) ([]server.Extent, error) {
	var get func(context.Context, uint64, uint64) ([]server.Extent, error)
	if s, ok := b.inner.(server.BlockStatuser); ok {
		get = s.Allocation
	}
	return b.extents(ctx, off, n, 0, get)
}

// ReadExtents is inner's read split from the offset on.
func (b *Backend) ReadExtents(ctx context.Context, off, n uint64) ([]server.Extent, error) {
	if s, ok := b.inner.(server.ReadSplitter); ok {
		return b.extents(ctx, off, n, 0, s.ReadExtents)
	}
	return b.Allocation(ctx, off, n)
}

// AllocationDepth is inner's qemu:allocation-depth from the offset on; the rounded tail is
// unallocated (depth 0).
func (b *Backend) AllocationDepth(ctx context.Context, off, n uint64) ([]server.Extent, error) {
	var get func(context.Context, uint64, uint64) ([]server.Extent, error)
	if s, ok := b.inner.(server.DepthStatuser); ok {
		get = s.AllocationDepth
	}
	exts, err := b.extents(ctx, off, n, 1, get)
	if err == nil && b.inside(off, n) == 0 {
		exts[0].Flags = 0
	}
	return exts, err
}
