// Write zeroes: zero flags (v3), subcluster zero bits, deallocation, or written zeros (v2).
package qcow2

import "fmt"

// WriteZeroes makes [off, off+n) read as zeros.
//
// With unmap the engine may deallocate: clusters become "reads as zero" without a host
// cluster, or unallocated when there is no backing file. Without unmap (NBD_CMD_FLAG_NO_HOLE)
// allocated clusters keep their host cluster and get the zero flag (QEMU's ZERO_ALLOC).
// Version 2 images have no zero flag: clusters are deallocated when unmap is allowed and no
// backing file could show through, and zeros are written otherwise. Zeros promised here never
// expose backing data. Parts of a cluster (of a subcluster with extended L2) are written as
// zero bytes, unless they already read as zeros.
func (img *Image) WriteZeroes(off, n uint64, unmap bool) error {
	img.gate.RLock()
	defer img.gate.RUnlock()
	if err := img.checkRequest(off, n, true); err != nil {
		return err
	}
	if err := img.writeZeroes(off, n, unmap); err != nil {
		return err
	}
	if img.opts.WriteThrough {
		return img.flush()
	}
	return nil
}

func (img *Image) writeZeroes(off, n uint64, unmap bool) error {
	if n == 0 {
		return nil
	}
	if img.dataRaw {
		// The data file must stay a consistent raw image: zeros go into it.
		return img.zeroRawData(off, n)
	}
	gran := img.geo.SubclusterSize()
	end := off + n
	a := alignUp(off, gran)
	b := end / gran * gran
	if end == img.size.Load() {
		b = alignUp(end, gran)
	}
	if a >= b {
		return img.writeZeroBytes(off, n, false)
	}
	if off < a {
		if err := img.writeZeroBytes(off, a-off, false); err != nil {
			return err
		}
	}
	var fallback [][2]uint64
	err := img.forEachTable(a, b, func(l1i L1Index, from, to uint64) error {
		var err error
		fallback, err = img.zeroInTable(l1i, from, to, unmap, fallback)
		return err
	})
	if err != nil {
		return err
	}
	for _, r := range fallback {
		if err := img.writeZeroBytes(r[0], min(r[1], end)-r[0], false); err != nil {
			return err
		}
	}
	if b < end {
		return img.writeZeroBytes(b, end-b, false)
	}
	return nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) / a * a }

// forEachTable calls fn with mu held for each L2 table's part of [from, to), after waiting
// (without the lock) until no cluster of that part is in flight.
func (img *Image) forEachTable(from, to uint64, fn func(l1i L1Index, from, to uint64) error) error {
	g := img.geo
	for pos := from; pos < to; {
		l1i := GuestOffset(pos).L1Index(g)
		stop := min(to, uint64(l1i.FirstCluster(g).Offset(g))+g.GuestBytesPerL2())
		img.mu.Lock()
		if err := img.prepareWrite(); err != nil {
			img.mu.Unlock()
			return err
		}
		if ch := img.waitBusy(GuestOffset(pos).Cluster(g), GuestOffset(stop-1).Cluster(g)); ch != nil {
			img.mu.Unlock()
			<-ch
			continue
		}
		err := fn(l1i, pos, stop)
		if err != nil {
			err = img.fail(err)
		}
		img.trimCaches()
		img.mu.Unlock()
		if err != nil {
			return err
		}
		pos = stop
	}
	return nil
}

// zeroInTable sets zero flags (or deallocates) for the whole (sub)clusters of [from, to),
// which lie in the L2 table of l1i. Ranges it cannot handle in the metadata (v2 images,
// compressed clusters with extended L2) are appended to fallback, to be written as zeros.
func (img *Image) zeroInTable(l1i L1Index, from, to uint64, unmap bool, fallback [][2]uint64) ([][2]uint64, error) {
	g := img.geo
	cs := g.ClusterSize()
	v2 := img.hdr.Version < 3
	hasBacking := img.backing != nil
	key, ok, err := img.l2For(l1i)
	if err != nil {
		return fallback, err
	}
	if !ok && !hasBacking {
		// Nothing allocated here and nothing behind: already zeros.
		return fallback, nil
	}
	if v2 && !(unmap && !hasBacking) {
		// No zero flag: written zeros are the only way, except where nothing is allocated
		// and no backing file shows through.
		for pos := from; pos < to; {
			gc := GuestOffset(pos).Cluster(g)
			next := min(to, uint64(gc.Offset(g))+cs)
			fallback = appendRange(fallback, pos, next)
			pos = next
		}
		return fallback, nil
	}
	var t *l2Table
	if ok {
		if t, err = img.l2.get(key); err != nil {
			return fallback, err
		}
	}
	var wt *l2Table // the table made writable, on first change
	for pos := from; pos < to; {
		gc := GuestOffset(pos).Cluster(g)
		in := GuestOffset(pos).InCluster(g)
		next := min(to, uint64(gc.Offset(g))+cs)
		var old slot
		if t != nil {
			if err := t.check(gc.L2Index(g)); err != nil {
				return fallback, err
			}
			old = t.get(gc.L2Index(g))
		}
		nw, free, fb := img.zeroSlot(old, in, in+(next-pos), unmap, v2)
		if fb {
			fallback = appendRange(fallback, pos, next)
		}
		if nw != old {
			if wt == nil {
				if key, wt, err = img.l2ForWrite(l1i); err != nil {
					return fallback, err
				}
				t = wt
			}
			wt.set(gc.L2Index(g), nw)
			img.l2.markDirty(key)
			if free {
				img.freeEntry(old, unmap)
			}
		}
		pos = next
	}
	return fallback, nil
}

func appendRange(rs [][2]uint64, a, b uint64) [][2]uint64 {
	if len(rs) > 0 && rs[len(rs)-1][1] == a {
		rs[len(rs)-1][1] = b
		return rs
	}
	return append(rs, [2]uint64{a, b})
}

// zeroSlot computes the entry that makes bytes [from, to) of a cluster (whole subclusters)
// read as zeros, whether what the old entry points at is to be released, and whether the
// range must be written as zeros instead (fallback).
func (img *Image) zeroSlot(old slot, from, to uint64, unmap, v2 bool) (nw slot, free, fallback bool) {
	g := img.geo
	hasBacking := img.backing != nil
	host, has := img.hostOf(old.e)
	// plain is an entry that reads as zeros without a host cluster.
	plain := slot{}
	if hasBacking && !v2 {
		plain.e = L2Entry(l2Zero)
		if g.ExtendedL2 {
			plain = slot{b: MakeSubclusterBitmap(0, allSubclusters)}
		}
	}
	whole := from == 0 && to == g.ClusterSize()
	if !g.ExtendedL2 {
		k := img.subKind(old, 0)
		switch {
		case v2:
			// Only reached with unmap and no backing file: deallocate.
			return slot{}, k == KindData || k == KindCompressed, false
		case k == KindUnallocated && !hasBacking:
			return old, false, false
		case k == KindZero && (!has || !unmap):
			return old, false, false
		case k == KindData && old.e.Copied() && !unmap:
			return slot{e: MakeL2Entry(host, true, true)}, false, false
		}
		return plain, k != KindUnallocated, false
	}
	Z := g.scMask(from, to)
	oldA, oldZ := old.b.Allocated(), old.b.ZeroBits()
	if old.e.Compressed() {
		if !whole {
			return old, false, true
		}
		return plain, true, false
	}
	if !hasBacking && oldA&Z == 0 {
		return old, false, false
	}
	a, z := oldA&^Z, oldZ|Z
	if has && a == 0 && (unmap || !old.e.Copied()) {
		// No subcluster left that uses the host cluster: release it.
		return slot{b: MakeSubclusterBitmap(0, z)}, true, false
	}
	return slot{e: old.e, b: MakeSubclusterBitmap(a, z)}, false, false
}

// writeZeroBytes writes zeros over [off, off+n), skipping the parts that already read as
// zeros unless always is set.
func (img *Image) writeZeroBytes(off, n uint64, always bool) error {
	if !always {
		img.mu.Lock()
		ext, _, err := img.mapRead(off, n, nil)
		img.trimCaches()
		if err != nil {
			err = img.fail(err)
		}
		img.mu.Unlock()
		if err != nil {
			return err
		}
		for _, e := range ext {
			if e.kind == KindZero || (e.kind == KindUnallocated && img.backing == nil) {
				continue
			}
			if err := img.writeZeroRange(e.off, e.n); err != nil {
				return err
			}
		}
		return nil
	}
	return img.writeZeroRange(off, n)
}

func (img *Image) writeZeroRange(off, n uint64) error {
	for n > 0 {
		k := min(n, uint64(len(zeroBuf)))
		if err := img.writeAt(zeroBuf[:k], off); err != nil {
			return fmt.Errorf("qcow2: write zeros at %d: %w", off, err)
		}
		off, n = off+k, n-k
	}
	return nil
}
