// Resize: grow (L1 growth by copy-then-switch) or shrink (deallocate past the new end).
package qcow2

import "fmt"

// Resize changes the virtual size. It waits for requests in flight and blocks new ones while
// it runs. Growing moves the L1 table to a larger copy when needed; the new range reads as
// zeros, even where a backing file is longer than the old size (QEMU does the same since
// 5.1). Shrinking deallocates every cluster past the new end first. newSize must be a
// multiple of 512; images with internal snapshots cannot be resized (as in QEMU).
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
	err := img.bitmapResizeError()
	if err == nil {
		err = img.prepareWrite()
	}
	if err == nil && len(img.snapshots) > 0 {
		err = fmt.Errorf("%w: cannot resize an image with internal snapshots", ErrUnsupported)
	}
	if err == nil && newSize > old {
		err = img.growL1(img.geo.L1EntriesFor(newSize))
	}
	img.mu.Unlock()
	if err != nil || newSize == old {
		return err
	}
	if newSize < old {
		return img.shrink(newSize, old)
	}
	if err := img.setSize(newSize); err != nil {
		return err
	}
	// What lies past the old end must read as zeros: the rest of the old last cluster (it
	// may hold bytes from before a shrink) and whatever a backing file has there.
	zeroEnd := min(newSize, alignUp(old, img.geo.ClusterSize()))
	if img.backing != nil {
		zeroEnd = max(zeroEnd, min(newSize, img.backing.layerSize()))
	}
	if zeroEnd > old {
		return img.writeZeroes(old, zeroEnd-old, true)
	}
	return nil
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
	if n > uint64(len(zeroBuf)) && img.l2.capacity < img.l2CacheEntries() {
		img.l2.capacity = img.l2CacheEntries()
	}
	img.stateChanged()
	return nil
}

// shrink deallocates every cluster past newSize (durably), then writes the new size.
func (img *Image) shrink(newSize, old uint64) error {
	cs := img.geo.ClusterSize()
	from := alignUp(newSize, cs)
	to := alignUp(old, cs)
	if from < to {
		err := img.forEachTable(from, to, func(l1i L1Index, a, b uint64) error {
			key, ok, err := img.l2For(l1i)
			if err != nil || !ok {
				return err
			}
			t, err := img.l2.get(key)
			if err != nil {
				return err
			}
			for pos := a; pos < b; pos += cs {
				gc := GuestOffset(pos).Cluster(img.geo)
				if err := t.check(gc.L2Index(img.geo)); err != nil {
					return err
				}
				old := t.get(gc.L2Index(img.geo))
				if old == (slot{}) {
					continue
				}
				if key, t, err = img.l2ForWrite(l1i); err != nil {
					return err
				}
				t.set(gc.L2Index(img.geo), slot{})
				img.l2.markDirty(key)
				img.freeEntry(old, true)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	img.mu.Lock()
	err := img.flushLocked()
	img.mu.Unlock()
	if err != nil {
		return err
	}
	return img.setSize(newSize)
}
