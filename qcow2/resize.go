// Resize as qemu-img resize does it (qcow2_co_truncate): grow (exact L1 growth, zeroing the
// new area over a longer backing file) or shrink (clusters, L2 tables, refcount blocks and the
// file's tail released).
package qcow2

import "fmt"

// Resize changes the virtual size. It waits for requests in flight and blocks new ones while
// it runs. newSize must be a multiple of 512. Internal snapshots keep their own tables, data
// and recorded disk size either way (QEMU allows both since 5.0), except that a version 2
// image with snapshots is refused, as QEMU refuses it.
//
// Growing moves the L1 table to an exact-size copy when it needs more entries. When a backing
// file is longer than the old size, the new area must not show it: its whole subclusters get
// the zero flag and the unaligned head is written as zeros, as QEMU does; a version 2 image
// cannot do that and is refused (QEMU: "Failed to zero out new clusters"). A raw external data
// file gets the new clusters mapped (QEMU preallocates their metadata). Bytes of the old last
// cluster past the old end (left there by an earlier shrink) are zeroed where this image
// stores them: QEMU shows them again, qnbd does not.
//
// Shrinking clears every entry past the new end (the backing file shows through there, as
// in QEMU), zeroes the L1 entries past the new size and frees their L2 tables, drops
// refcount blocks left counting nothing, and truncates the file after its last used
// cluster. The header's L1 size stays, as QEMU leaves it.
//
// Persistent bitmaps follow the new size; an in-use one refuses the resize (bitmap_resize.go).
func (img *Image) Resize(newSize uint64) error {
	img.gate.Lock()
	defer img.gate.Unlock()
	if img.readOnly {
		return ErrReadOnly
	}
	if newSize%512 != 0 {
		return fmt.Errorf("qcow2: the new size %d is not a multiple of 512", newSize)
	}
	img.mu.Lock()
	old := img.size.Load()
	err := img.bitmapResizeError(newSize)
	if err == nil && img.hdr.Version < 3 && img.hdr.SnapshotCount > 0 {
		// A version 2 snapshot need not record its disk size, so it could not be restored
		// at the size it had (refused even at the same size, as QEMU does).
		err = &AmendError{"Can't resize a v2 image which has snapshots"} // QEMU's words; ErrUnsupported
	}
	if err == nil {
		err = img.prepareWrite()
	}
	if err == nil {
		// A shrink reads the real end of the image from the refcounts.
		img.alloc.releaseReservation()
	}
	img.mu.Unlock()
	if err != nil || newSize == old {
		return err
	}
	if newSize < old {
		err = img.shrink(newSize, old)
	} else {
		err = img.grow(newSize, old)
	}
	if err == nil {
		img.resizeBitmaps(newSize) // bitmap_resize.go
	}
	return err
}

// grow is the growing half of Resize, with the gate held exclusively.
func (img *Image) grow(newSize, old uint64) error {
	zeroNew := img.backing != nil && img.backing.layerSize() > old
	if zeroNew && img.hdr.Version < 3 {
		return fmt.Errorf("%w: cannot grow a version 2 image over a longer backing file: the new area would show the backing file, and zeroing it needs the zero flag (QEMU: Failed to zero out new clusters)", ErrUnsupported)
	}
	img.mu.Lock()
	err := img.growL1(img.geo.l1EntriesFor(newSize))
	img.mu.Unlock()
	if err != nil {
		return err
	}
	if err := img.setSize(newSize); err != nil {
		return err
	}
	if img.dataRaw {
		if err := img.mapRawData(old, newSize); err != nil {
			return err
		}
	}
	if !zeroNew {
		return img.zeroStaleTail(old, newSize)
	}
	// QEMU's BDRV_REQ_ZERO_WRITE truncate: zero flags from the first whole subcluster, written
	// zeros for the unaligned head.
	sc := img.geo.subclusterSize()
	zs := alignUp(old, sc)
	if newSize > zs {
		if err := img.zeroize(zs, newSize-zs, 0, false); err != nil {
			return err
		}
	}
	if zs > old {
		return img.writeZeroRange(old, min(zs, newSize)-old)
	}
	return nil
}

// zeroStaleTail zeroes what this image stores in [old, end of its cluster) ∩ [old, newSize):
// bytes past the old end that a shrink left in place.
func (img *Image) zeroStaleTail(old, newSize uint64) error {
	end := min(alignUp(old, img.geo.ClusterSize()), newSize)
	if end <= old {
		return nil
	}
	img.mu.Lock()
	ext, _, err := img.mapRead(old, end-old, nil)
	img.mu.Unlock()
	if err != nil {
		return err
	}
	for _, e := range ext {
		if e.kind == kindData || e.kind == kindCompressed {
			if err := img.writeZeroRange(e.off, e.n); err != nil {
				return err
			}
		}
	}
	return nil
}

// mapRawData maps the clusters of [from, to) that are not mapped yet to their place in a raw
// external data file (their guest offset), as QEMU's metadata preallocation of a grown
// data_file_raw image does, so that the image keeps reading what the data file holds.
func (img *Image) mapRawData(from, to uint64) error {
	g := img.geo
	cs := g.ClusterSize()
	return img.forEachTable(alignDown(from, cs), to, func(l1i l1Index, a, b uint64) error {
		for pos := a; pos < b; pos += cs {
			gc := GuestOffset(pos).cluster(g)
			old, err := img.entryAt(l1i, gc)
			if err != nil {
				return err
			}
			if img.clusterType(old.e) == ctNormal {
				continue
			}
			key, t, err := img.l2ForWrite(l1i, gc.l2Index(g), gc.l2Index(g)+1)
			if err != nil {
				return err
			}
			t.set(gc.l2Index(g), slot{e: makeL2Entry(img.dataHostFor(gc), true, false)})
			img.l2.markDirty(key)
		}
		return nil
	})
}

// setSize writes the new virtual size to the header and, as QEMU does, resizes the external
// data file to match (for data_file_raw it must stay a raw image of the disk).
func (img *Image) setSize(n uint64) error {
	img.mu.Lock()
	defer img.mu.Unlock()
	h := img.hdr
	h.Size = n
	if err := img.writeHeaderSync(&h); err != nil {
		return err
	}
	if img.data != img.file {
		if err := img.data.Truncate(int64(n)); err != nil {
			return fmt.Errorf("qcow2: resize the external data file: %w", err)
		}
		img.dataSize = n
	}
	img.hdr = h
	img.size.Store(n)
	img.stateChanged()
	return nil
}

// shrink is the shrinking half of Resize (QEMU's order): entries past the new end cleared,
// L1 entries past the new size cleared and their L2 tables freed, empty refcount blocks
// dropped, the file's unused tail cut, then the new size written.
func (img *Image) shrink(newSize, old uint64) error {
	cs := img.geo.ClusterSize()
	from := alignUp(newSize, cs)
	if to := alignUp(old, cs); from < to {
		if err := img.discardClusters(from, to, true); err != nil {
			return err
		}
	}
	img.mu.Lock()
	err := img.flushLocked()
	if err == nil {
		err = img.shrinkL1(img.geo.l1EntriesFor(newSize))
	}
	if err == nil {
		err = img.flushLocked()
	}
	if err == nil {
		err = img.alloc.dropEmptyRefBlocks()
	}
	if err == nil {
		err = img.truncateTail()
	}
	img.mu.Unlock()
	if err != nil {
		return err
	}
	return img.setSize(newSize)
}

// shrinkL1 clears the L1 entries from n on (qcow2_shrink_l1_table) and frees their L2 tables
// once the cleared entries are on disk (the next flush). Called with mu held, after a flush.
func (img *Image) shrinkL1(n uint64) error {
	for i := n; i < uint64(len(img.l1.entries)); i++ {
		c, ok, err := img.l2For(l1Index(i))
		if err != nil {
			return err
		}
		img.l1.set(l1Index(i), 0)
		if !ok {
			continue
		}
		img.l2.drop(c)
		img.deferred = append(img.deferred, deferredFree{c: c, n: 1, punch: true})
	}
	return nil
}

// truncateTail cuts the image file after its last cluster with a non-zero refcount, when that
// is before its end (qcow2_co_truncate's tail truncation). Called with mu held, everything
// flushed.
func (img *Image) truncateTail() error {
	g := img.geo
	size, err := img.file.Size()
	if err != nil {
		return err
	}
	last := int64(g.clustersFor(uint64(size))) - 1
	for ; last >= 0; last-- {
		rc, err := img.alloc.refcount(hostCluster(last))
		if err != nil {
			return err
		}
		if rc != 0 {
			break
		}
	}
	end := uint64(last+1) * g.ClusterSize()
	if end >= uint64(size) {
		return nil
	}
	if err := img.file.Truncate(int64(end)); err != nil {
		img.log.Warn("qcow2: failed to truncate the tail of the image", "err", err)
		return nil
	}
	img.fileSize = end
	img.alloc.end = HostOffset(end)
	img.lastHost = end
	img.stateChanged()
	return nil
}
