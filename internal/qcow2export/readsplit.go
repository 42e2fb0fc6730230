// Where a structured READ is cut: the engine's block status runs, cut again where QEMU's
// bdrv_block_status_above ends one answer (docs/qemu-nbd-fidelity.md).
package qcow2export

import (
	"context"

	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

var _ server.ReadSplitter = (*Backend)(nil)

// layerGeometry is what decides QEMU's cuts in one qcow2 layer of the chain.
type layerGeometry struct {
	cluster uint64 // cluster size
	slice   uint64 // guest bytes mapped by one L2 cache slice
}

// chainGeometry lists the layers from the top down to the last qcow2 one (a raw bottom layer
// has no cuts of its own).
func chainGeometry(img *qcow2.Image) []layerGeometry {
	var out []layerGeometry
	for l := img; l != nil; l = l.Backing() {
		h := l.Header()
		cs := h.ClusterSize()
		entry := uint64(8)
		if h.Incompatible&qcow2.IncompatExtendedL2 != 0 {
			entry = 16
		}
		// QEMU's L2 cache entries are a cluster by default, so a slice holds cluster/entry
		// L2 entries, each mapping a cluster; one block-status answer never crosses a slice.
		out = append(out, layerGeometry{cluster: cs, slice: cs / entry * cs})
	}
	return out
}

// ReadExtents answers server.ReadSplitter: the runs of Image.BlockStatus as QEMU answers them
// one call at a time. A run ends where the engine's does (a change of kind, layer or host
// contiguity), at every L2 slice boundary of the layers it went through (the top one down
// to the one that answered), and after every compressed cluster, which QEMU reports alone.
func (b *Backend) ReadExtents(ctx context.Context, off, length uint64) ([]server.Extent, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	st, err := b.img.BlockStatus(qcow2.GuestOffset(off), length)
	if err != nil {
		return nil, classify(err)
	}
	var out []server.Extent
	for _, s := range st {
		var flags uint32
		if !s.Data {
			flags |= server.StateHole
		}
		if s.Zero {
			flags |= server.StateZero
		}
		for pos, end := s.Start, s.End(); pos < end; {
			next := end
			for d, g := range b.geo {
				if d > s.Depth {
					break
				}
				next = min(next, (pos/g.slice+1)*g.slice)
				if d == s.Depth && s.Compressed {
					next = min(next, (pos/g.cluster+1)*g.cluster)
				}
			}
			out = append(out, server.Extent{Length: next - pos, Flags: flags})
			pos = next
		}
	}
	return out, nil
}
