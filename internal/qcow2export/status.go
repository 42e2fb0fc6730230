// Block status (base:allocation, qemu:allocation-depth) and CACHE, from Image.Map.
package qcow2export

import (
	"context"
	"sync"

	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

const (
	// mapChunk is how much of the guest one Image.Map call covers.
	mapChunk = 1 << 30
	// maxExtents stops mapping once a reply has this many extents; the client asks again
	// for the rest (the server caps a chunk at 8192 descriptors anyway).
	maxExtents = 4096
	// cacheChunk is the read size of CACHE.
	cacheChunk = 1 << 20
)

// Allocation answers base:allocation as qemu-nbd does. qemu-nbd asks its block layer for the
// status of the whole backing chain and reports NBD_STATE_HOLE unless the range holds data,
// NBD_STATE_ZERO when it reads as zeros:
//
//	data or compressed cluster, in any layer            0
//	  ... of this image, over a hole of its host file
//	      when metadata preallocation was detected      ZERO
//	zero cluster (plain or allocated), in any layer     HOLE|ZERO
//	hole of a raw backing file                          HOLE|ZERO
//	past the end of a shorter backing file              HOLE|ZERO
//	unallocated everywhere                              HOLE|ZERO
//
// (QEMU reports an allocated zero cluster as a hole too: its qcow2 driver returns ZERO
// without DATA for it.)
func (b *Backend) Allocation(ctx context.Context, off, length uint64) ([]server.Extent, error) {
	var out []server.Extent
	add := func(n uint64, flags uint32) {
		if n == 0 {
			return
		}
		if k := len(out) - 1; k >= 0 && out[k].Flags == flags {
			out[k].Length += n
			return
		}
		out = append(out, server.Extent{Length: n, Flags: flags})
	}
	recurse := b.metadataPrealloc()
	err := b.walk(ctx, off, length, func(e qcow2.Extent) bool {
		switch e.Kind {
		case qcow2.KindData, qcow2.KindCompressed:
			if recurse && e.Kind == qcow2.KindData && e.Depth == 0 && e.HostFile != "" {
				b.hostHoles(e.HostFile, uint64(e.Host), e.Length, func(n uint64, hole bool) {
					if hole {
						add(n, server.StateZero)
					} else {
						add(n, 0)
					}
				})
			} else {
				add(e.Length, 0)
			}
		default:
			add(e.Length, server.StateHole|server.StateZero)
		}
		return len(out) < maxExtents
	})
	return out, err
}

// AllocationDepth answers qemu:allocation-depth as qemu-nbd does (bdrv_is_allocated_above
// over the whole chain): 0 where no layer allocates the range, else 1 + the depth of the layer
// that does, where a zero cluster, a raw backing file (holes included) and the range past the
// end of a shorter backing file all count as allocated in their layer.
func (b *Backend) AllocationDepth(ctx context.Context, off, length uint64) ([]server.Extent, error) {
	var out []server.Extent
	err := b.walk(ctx, off, length, func(e qcow2.Extent) bool {
		var depth uint32
		if e.Kind != qcow2.KindUnallocated {
			depth = uint32(e.Depth) + 1
		}
		if k := len(out) - 1; k >= 0 && out[k].Flags == depth {
			out[k].Length += e.Length
		} else {
			out = append(out, server.Extent{Length: e.Length, Flags: depth})
		}
		return len(out) < maxExtents
	})
	return out, err
}

// walk calls fn for the extents of [off, off+length) in order, mapping mapChunk bytes at a
// time, until fn returns false or the range is covered.
func (b *Backend) walk(ctx context.Context, off, length uint64, fn func(qcow2.Extent) bool) error {
	end := off + length
	for pos := off; pos < end; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := min(end-pos, mapChunk)
		ext, err := b.img.Map(pos, n)
		if err != nil {
			return classify(err)
		}
		for _, e := range ext {
			if e.Length == 0 {
				continue
			}
			if !fn(e) {
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
	err := b.walk(ctx, off, length, func(e qcow2.Extent) bool {
		if e.Kind != qcow2.KindData && e.Kind != qcow2.KindCompressed {
			return true
		}
		for pos, end := e.Start, e.Start+e.Length; pos < end; {
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
