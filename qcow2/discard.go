// Discard: deallocate whole clusters, punching holes in the host file where it can.
package qcow2

// Discard deallocates the whole clusters in [off, off+n); partial clusters are left alone
// (discard is advisory). Afterwards a discarded cluster reads as zeros, except in a version 2
// image with a backing file, where it reads the backing file's data (there is no zero flag to
// say otherwise): QEMU's semantics. The host clusters are freed and, where the host file
// supports it, their bytes deallocated (PUNCH_HOLE). With a raw external data file the
// clusters stay mapped (the data file must remain a consistent raw image) and the data file's
// bytes are deallocated (or, where it cannot punch holes, overwritten with zeros).
func (img *Image) Discard(off, n uint64) error {
	img.gate.RLock()
	defer img.gate.RUnlock()
	if err := img.checkRequest(off, n, true); err != nil {
		return err
	}
	if err := img.discard(off, n); err != nil {
		return err
	}
	if img.opts.WriteThrough {
		return img.flush()
	}
	return nil
}

func (img *Image) discard(off, n uint64) error {
	g := img.geo
	cs := g.ClusterSize()
	end := off + n
	a := alignUp(off, cs)
	b := end / cs * cs
	if end == img.size.Load() {
		b = alignUp(end, cs)
	}
	if a >= b {
		return nil
	}
	if img.dataRaw {
		// The clusters stay mapped (the data file must remain a consistent raw image); their
		// bytes go.
		return img.zeroRawData(a, min(b, img.size.Load())-a)
	}
	return img.forEachTable(a, b, func(l1i L1Index, from, to uint64) error {
		return img.discardInTable(l1i, from, to)
	})
}

func (img *Image) discardInTable(l1i L1Index, from, to uint64) error {
	g := img.geo
	cs := g.ClusterSize()
	key, ok, err := img.l2For(l1i)
	if err != nil {
		return err
	}
	// With a backing file, v3 images hide it behind the zero flag, as QEMU does.
	zeroFlag := img.backing != nil && img.hdr.Version >= 3
	if !ok && !zeroFlag {
		return nil
	}
	nw := slot{}
	if zeroFlag {
		if g.ExtendedL2 {
			nw.b = MakeSubclusterBitmap(0, allSubclusters)
		} else {
			nw.e = L2Entry(l2Zero)
		}
	}
	var t *l2Table
	if ok {
		if t, err = img.l2.get(key); err != nil {
			return err
		}
	}
	writable := false
	for pos := from; pos < to; pos += cs {
		gc := GuestOffset(pos).Cluster(g)
		var old slot
		if t != nil {
			if err := t.check(gc.L2Index(g)); err != nil {
				return err
			}
			old = t.get(gc.L2Index(g))
		}
		if old == nw {
			continue
		}
		if !writable {
			if key, t, err = img.l2ForWrite(l1i); err != nil {
				return err
			}
			writable = true
		}
		t.set(gc.L2Index(g), nw)
		img.l2.markDirty(key)
		img.freeEntry(old, true)
	}
	return nil
}

// zeroRawData makes [off, off+n) of a raw external data file read as zeros, punching a hole
// where the file system can and writing zeros where it cannot. Guest clusters of such an
// image live at their guest offset, so the guest range reads as zeros afterwards whatever
// the L2 entries say (unallocated, zero, or data in the data file).
func (img *Image) zeroRawData(off, n uint64) error {
	img.mu.Lock()
	err := img.prepareWrite()
	img.mu.Unlock()
	if err != nil || n == 0 {
		return err
	}
	if hp, ok := img.data.(HolePuncher); ok {
		if err := hp.PunchHole(int64(off), int64(n)); err == nil {
			return nil
		}
	}
	return img.writeZeroBytes(off, n, true)
}
