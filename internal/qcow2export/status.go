// Block status (base:allocation, qemu:allocation-depth) and CACHE, from Image.BlockStatus.
package qcow2export

import (
	"context"
	"sync"

	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

const (
	// mapChunk is how much of the guest one Image.BlockStatus call covers.
	mapChunk = 1 << 30
	// maxExtents stops mapping once a reply has this many extents; the client asks again
	// for the rest (the server caps a chunk at 8192 descriptors anyway).
	maxExtents = 4096
	// cacheChunk is the read size of CACHE.
	cacheChunk = 1 << 20
)

// Allocation answers base:allocation as qemu-nbd does: from the engine's BlockStatus (QEMU's
// bdrv_block_status_above over the whole chain), NBD_STATE_HOLE unless the range holds data,
// NBD_STATE_ZERO when it is known to read as zeros.
func (b *Backend) Allocation(ctx context.Context, off, length uint64) ([]server.Extent, error) {
	var out []server.Extent
	err := b.walk(ctx, off, length, func(s qcow2.Status) bool {
		var flags uint32
		if !s.Data {
			flags |= server.StateHole
		}
		if s.Zero {
			flags |= server.StateZero
		}
		out = addExtent(out, s.Length, flags)
		return len(out) < maxExtents
	})
	return out, err
}

// AllocationDepth answers qemu:allocation-depth as qemu-nbd does (bdrv_is_allocated_above over
// the whole chain): 0 where no layer allocates the range, else 1 + the depth of the layer
// that does.
func (b *Backend) AllocationDepth(ctx context.Context, off, length uint64) ([]server.Extent, error) {
	var out []server.Extent
	err := b.walk(ctx, off, length, func(s qcow2.Status) bool {
		var depth uint32
		if s.Allocated {
			depth = uint32(s.Depth) + 1
		}
		out = addExtent(out, s.Length, depth)
		return len(out) < maxExtents
	})
	return out, err
}

// addExtent appends n bytes with flags, merging with the previous extent when they match.
func addExtent(out []server.Extent, n uint64, flags uint32) []server.Extent {
	if n == 0 {
		return out
	}
	if k := len(out) - 1; k >= 0 && out[k].Flags == flags {
		out[k].Length += n
		return out
	}
	return append(out, server.Extent{Length: n, Flags: flags})
}

// walk calls fn for the block status runs of [off, off+length) in order, mapping mapChunk
// bytes at a time, until fn returns false or the range is covered.
func (b *Backend) walk(ctx context.Context, off, length uint64, fn func(qcow2.Status) bool) error {
	end := off + length
	for pos := off; pos < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(end-pos, mapChunk)
		st, err := b.img.BlockStatus(qcow2.GuestOffset(pos), n)
		if err != nil {
			return classify(err)
		}
		for _, s := range st {
			if s.Length == 0 {
				continue
			}
			if !fn(s) {
				return nil
			}
		}
		pos += n
	}
	return nil
}

var cacheBufs = sync.Pool{New: func() any { b := make([]byte, cacheChunk); return &b }}

// Cache prefetches [off, off+length): it reads the parts some layer stores (data and
// compressed clusters) and drops the bytes, so that later reads find them in the host's page
// cache and the engine's metadata cache. Zeros and unallocated ranges cost nothing to read
// and are skipped. Unlike QEMU it never copies backing data into the image.
func (b *Backend) Cache(ctx context.Context, off, length uint64) error {
	bp := cacheBufs.Get().(*[]byte)
	defer cacheBufs.Put(bp)
	buf := *bp
	var rerr error
	err := b.walk(ctx, off, length, func(s qcow2.Status) bool {
		if !s.Data {
			return true
		}
		for pos, end := s.Start, s.End(); pos < end; {
			if rerr = ctx.Err(); rerr != nil {
				return false
			}
			n := min(end-pos, uint64(len(buf)))
			if _, rerr = b.img.ReadAt(buf[:n], int64(pos)); rerr != nil {
				rerr = classify(rerr)
				return false
			}
			pos += n
		}
		return true
	})
	if err != nil {
		return err
	}
	return rerr
}
