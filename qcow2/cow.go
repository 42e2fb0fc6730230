// Copy-on-write: which parts of a cluster a write must fill from the old contents, and reading them.
package qcow2

import "math/bits"

// span is a byte range within one cluster.
type span struct{ a, b uint64 }

// scMask returns the mask of subclusters touched by [from, to) of a cluster.
func (g Geometry) scMask(from, to uint64) uint32 {
	if !g.ExtendedL2 {
		return 1
	}
	scs := g.SubclusterSize()
	first, last := from/scs, (to-1)/scs
	return uint32((uint64(1)<<(last+1) - 1) &^ (uint64(1)<<first - 1))
}

// edgeFills returns the parts of the first and last subclusters touched by [from, to) that
// the write does not cover, leaving out subclusters in keep (already allocated in the target
// cluster, whose bytes are in place). Without extended L2 the subcluster is the cluster.
func (g Geometry) edgeFills(from, to uint64, keep uint32) []span {
	scs := g.SubclusterSize()
	var out []span
	first, last := from/scs, (to-1)/scs
	if from%scs != 0 && keep&(1<<first) == 0 {
		out = append(out, span{first * scs, from})
	}
	if to%scs != 0 && keep&(1<<last) == 0 {
		out = append(out, span{to, (last + 1) * scs})
	}
	return out
}

// wholeSubclusters returns mask as spans of whole subclusters, adjacent ones merged.
func (g Geometry) wholeSubclusters(mask uint32) []span {
	scs := g.SubclusterSize()
	var out []span
	for mask != 0 {
		i := uint64(bits.TrailingZeros32(mask))
		j := i
		for j < 32 && mask&(1<<j) != 0 {
			j++
		}
		out = append(out, span{i * scs, j * scs})
		if j >= 32 {
			break
		}
		mask &^= uint32((uint64(1)<<j - 1))
	}
	return out
}

// fillsUnallocated reports whether every subcluster the spans touch is unallocated under slot
// s (neither data nor zero): the first half of QEMU's is_zero_cow, which then asks the backing
// chain (zeroCOWBelow).
func (img *Image) fillsUnallocated(s slot, fills []span) bool {
	scs := img.geo.SubclusterSize()
	for _, f := range fills {
		for sc := f.a / scs; sc*scs < f.b; sc++ {
			if img.subKind(s, uint32(sc)) != KindUnallocated {
				return false
			}
		}
	}
	return true
}

// zeroCOWBelow reports whether the fills of guest cluster gc are unallocated in every layer
// below this image (bdrv_is_allocated_above; past the end of a shorter backing file counts
// as allocated). Called without locks.
func (img *Image) zeroCOWBelow(gc GuestCluster, fills []span) bool {
	if img.backing == nil {
		return true
	}
	bsize := img.backing.layerSize()
	base := uint64(gc.Offset(img.geo))
	for _, f := range fills {
		off, end := base+f.a, base+f.b
		if end > bsize {
			return false
		}
		st, err := img.backing.chainStatus(off, end-off, true)
		if err != nil {
			return false
		}
		for _, s := range st {
			if s.Allocated {
				return false
			}
		}
	}
	return true
}

// readOldView fills dst with bytes [a, a+len(dst)) of guest cluster gc as slot s describes
// them: the contents the cluster had before the write that is replacing it. comp caches the
// decompressed cluster across calls for one cluster.
func (img *Image) readOldView(dst []byte, gc GuestCluster, s slot, a uint64, comp *[]byte) error {
	g := img.geo
	if s.e.Compressed() {
		if *comp == nil {
			buf := make([]byte, g.ClusterSize())
			host, clen := s.e.CompressedRange(g)
			if err := img.readCompressed(buf, host, clen); err != nil {
				return err
			}
			*comp = buf
		}
		copy(dst, (*comp)[a:])
		return nil
	}
	scs := g.SubclusterSize()
	host, _ := img.hostOf(s.e)
	for len(dst) > 0 {
		sc := a / scs
		n := min(uint64(len(dst)), (sc+1)*scs-a)
		e := readExt{off: uint64(gc.Offset(g)) + a, n: n, kind: img.subKind(s, uint32(sc)), host: host.Add(a)}
		if err := img.readExtent(dst[:n], e); err != nil {
			return err
		}
		dst, a = dst[n:], a+n
	}
	return nil
}
