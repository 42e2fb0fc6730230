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
	scs := g.subclusterSize()
	first, last := from/scs, (to-1)/scs
	return uint32((uint64(1)<<(last+1) - 1) &^ (uint64(1)<<first - 1))
}

// edgeFills returns the parts of the first and last subclusters touched by [from, to) that
// the write does not cover, leaving out subclusters in keep (already allocated in the target
// cluster, whose bytes are in place). Without extended L2 the subcluster is the cluster.
func (g Geometry) edgeFills(from, to uint64, keep uint32) []span {
	scs := g.subclusterSize()
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
	scs := g.subclusterSize()
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

// cowRegions returns the copy-on-write parts of w as QEMU's L2Meta has them: the run of fills
// before the guest bytes (cow_start) and the run after them (cow_end), each possibly empty.
func (w *cwrite) cowRegions() [2]span {
	r := [2]span{{w.from, w.from}, {w.to, w.to}}
	for _, f := range w.fills {
		if f.b <= w.from {
			r[0].a = min(r[0].a, f.a)
		} else {
			r[1].b = max(r[1].b, f.b)
		}
	}
	return r
}

// zeroCOWHere is this image's half of QEMU's is_zero_cow, which asks bdrv_co_is_zero_fast of
// cow_start and of cow_end: the first block-status run of each region must cover it and read
// as zeros. Here that means each region lies wholly in zero subclusters (or a zero cluster)
// of the old entry, or wholly in unallocated ones; the latter are returned in below, to be
// asked of the backing chain (zeroCOWBelow), unless there is none (they read as zeros).
func (img *Image) zeroCOWHere(w *cwrite) (ok bool, below []span) {
	scs := img.geo.subclusterSize()
	for _, r := range w.cowRegions() {
		if r.a == r.b {
			continue
		}
		kind := img.subKind(w.old, uint32(r.a/scs))
		for sc := r.a / scs; sc*scs < r.b; sc++ {
			if img.subKind(w.old, uint32(sc)) != kind {
				return false, nil // two runs: QEMU's answer stops at the first
			}
		}
		switch {
		case kind == kindZero:
		case kind == kindUnallocated && img.backing == nil:
		case kind == kindUnallocated:
			below = append(below, r)
		default:
			return false, nil
		}
	}
	return true, below
}

// zeroCOWBelow is the backing chain's half of is_zero_cow for the regions of guest cluster gc
// that are unallocated in this image. Called without locks.
func (img *Image) zeroCOWBelow(gc guestCluster, regions []span) bool {
	base := uint64(gc.Offset(img.geo))
	for _, r := range regions {
		if !layerZeroFast(img.backing, base+r.a, r.b-r.a) {
			return false
		}
	}
	return true
}

// layerZeroFast is bdrv_co_is_zero_fast below the top image (block status without want_zero):
// a range at or past a layer's end reads as zeros allocated there; one crossing it gets an
// answer that stops at the end, so no; a raw layer answers data; a qcow2 layer answers from
// its own entries, then asks its backing file about ranges it leaves unallocated.
func layerZeroFast(l layer, off, n uint64) bool {
	size := l.layerSize()
	switch {
	case off >= size:
		return true
	case off+n > size:
		return false
	}
	q, ok := l.(qcow2Layer)
	if !ok {
		return false
	}
	img := q.img
	img.mu.Lock()
	ext, _, err := img.mapRead(off, n, nil)
	img.mu.Unlock()
	if err != nil || len(ext) == 0 {
		return false
	}
	for _, e := range ext[1:] {
		if e.kind != ext[0].kind {
			return false
		}
	}
	switch ext[0].kind {
	case kindZero:
		return true
	case kindUnallocated:
		return img.backing == nil || layerZeroFast(img.backing, off, n)
	}
	return false
}

// readOldView fills dst with bytes [a, a+len(dst)) of guest cluster gc as slot s describes
// them: the contents the cluster had before the write that is replacing it. comp caches the
// decompressed cluster across calls for one cluster.
func (img *Image) readOldView(dst []byte, gc guestCluster, s slot, a uint64, comp *[]byte) error {
	g := img.geo
	if s.e.Compressed() {
		if *comp == nil {
			buf := make([]byte, g.ClusterSize())
			host, clen := s.e.compressedRange(g)
			if err := img.readCompressed(buf, host, clen); err != nil {
				return err
			}
			*comp = buf
		}
		copy(dst, (*comp)[a:])
		return nil
	}
	scs := g.subclusterSize()
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
