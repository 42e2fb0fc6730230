// Discard as QEMU's qcow2 driver does it (qcow2_co_pdiscard, qcow2_cluster_discard): whole
// clusters only, zero flags in version 3 images, nothing in version 2 images with a backing file.
package qcow2

import "errors"

// Discard releases the whole clusters in [off, off+n) (and the partial last cluster of an
// image whose size is not cluster aligned); other parts are left alone, as discard is
// advisory. As QEMU's qcow2 driver:
//
//   - version 3: an allocated cluster (data, compressed, allocated zero) becomes a zero
//     cluster, whose host cluster is freed; without a backing file an unallocated cluster
//     stays unallocated, with one it gets the zero flag, so discarded clusters read as zeros;
//   - version 2 without a backing file: clusters are deallocated (they read as zeros);
//   - version 2 with a backing file: nothing is done (QEMU refuses with ENOTSUP, which its
//     block layer and NBD server turn into success): deallocating would expose the backing
//     file's data, and there is no zero flag.
//
// Freed host clusters are deallocated in the host file where it can (PUNCH_HOLE); an external
// data file gets the hole instead.
//
// One deliberate difference: QEMU fetches every L2 table the range touches for writing
// (get_cluster_table), so it allocates an empty table where there is none, or copies one
// shared with a snapshot, even when no entry changes (a discard of a never-written range,
// a zero request over clusters that are zero already). The engine creates or copies a table
// only to change an entry: the guest and qemu-img map see the same, QEMU's file just holds
// one more cluster per such table (and later allocations may land elsewhere).
func (img *Image) Discard(at GuestOffset, n uint64) error {
	off := uint64(at)
	img.gate.RLock()
	defer img.gate.RUnlock()
	if err := img.checkRequest(off, n, true); err != nil {
		return err
	}
	img.markDirty(off, n)
	if img.hdr.Version < 3 && img.backing != nil {
		return nil
	}
	cs := img.geo.ClusterSize()
	size := img.size.Load()
	end := off + n
	a := alignUp(off, cs)
	b := alignDown(end, cs)
	if end == size {
		b = alignUp(end, cs)
	}
	if a >= b {
		return nil
	}
	if err := img.discardClusters(a, b, false); err != nil {
		return err
	}
	if img.opts.WriteThrough {
		return img.flush()
	}
	return nil
}

// discardClusters is qcow2_cluster_discard over the whole clusters of [from, to) (to may be
// past the end of the image, for its partial last cluster). With full (a shrink), entries
// are cleared whatever the version, and the backing file shows through.
func (img *Image) discardClusters(from, to uint64, full bool) error {
	return img.forEachTable(from, to, func(l1i l1Index, a, b uint64) error {
		return img.discardInTable(l1i, a, b, full)
	})
}

// discardInTable is discard_in_l2_slice. The table is neither created nor copied when no
// entry changes.
func (img *Image) discardInTable(l1i l1Index, from, to uint64, full bool) error {
	g := img.geo
	cs := g.ClusterSize()
	key, ok, err := img.l2For(l1i)
	if err != nil {
		return err
	}
	hasBacking := img.backing != nil
	if !ok && (full || !hasBacking) {
		return nil // every entry is 0 and stays 0
	}
	var t *l2Table
	if ok {
		lo, hi := g.l2Span(from, to)
		if t, err = img.l2Get(key, lo, hi); err != nil {
			return err
		}
	}
	writable := false
	for pos := from; pos < to; pos += cs {
		gc := GuestOffset(pos).cluster(g)
		var old slot
		if t != nil {
			if err := t.check(gc.l2Index(g)); err != nil {
				return err
			}
			old = t.get(gc.l2Index(g))
		}
		nw := old
		switch {
		case full:
			nw = slot{}
		case hasBacking || img.clusterType(old.e).allocated():
			switch {
			case g.ExtendedL2:
				nw = slot{b: makeSubclusterBitmap(0, allSubclusters)}
			case img.hdr.Version >= 3:
				nw = slot{e: l2Entry(l2Zero)}
			default:
				nw = slot{}
			}
		}
		if nw == old {
			continue
		}
		if !writable {
			lo, hi := g.l2Span(from, to)
			if key, t, err = img.l2ForWrite(l1i, lo, hi); err != nil {
				return err
			}
			writable = true
		}
		t.set(gc.l2Index(g), nw)
		img.l2.markDirty(key)
		img.freeEntry(old, true)
	}
	return nil
}

// zeroRawData makes [off, off+n) of a raw external data file read as zeros before its L2
// entries are zeroed (qcow2_subcluster_zeroize zeroes the data file first): a hole where the
// file system can punch one, else written zeros, which ZeroNoFallback refuses.
func (img *Image) zeroRawData(off, n uint64, f ZeroFlags) error {
	img.mu.Lock()
	err := img.prepareWrite()
	img.mu.Unlock()
	if err != nil || n == 0 {
		return err
	}
	if hp, ok := img.data.(HolePuncher); ok {
		err := hp.PunchHole(int64(off), int64(n))
		if err == nil {
			return nil
		}
		if !errors.Is(err, ErrUnsupported) {
			return err
		}
	}
	if f&ZeroNoFallback != 0 {
		return ErrSlowZero
	}
	for n > 0 {
		k := min(n, uint64(len(zeroBuf)))
		if _, err := img.data.WriteAt(zeroBuf[:k], int64(off)); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}
