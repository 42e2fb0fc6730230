// Storing the persistent bitmaps at a clean close, as QEMU's
// qcow2_store_persistent_dirty_bitmaps does (docs/bitmaps.md).
package qcow2

import (
	"encoding/binary"
	"fmt"
	"slices"
	"time"
)

// storeBitmaps writes every loaded bitmap back, with mu held and no request in flight:
//
//  1. each bitmap gets new data clusters (one per cluster of bits holding a set bit; a table
//     entry of 0 stands for a cluster of zeros, and QEMU writes no all-ones flag either) and a
//     new table, in clusters the allocator counts on disk before they are handed out;
//  2. data sync, then the new directory goes to new clusters, with in-use cleared and the
//     auto flag as loaded (bitmaps that were in-use at open are copied as they were), sync;
//  3. the header's directory pointer switches (one 8-byte write inside the first sector) with
//     the autoclear bit on, sync;
//  4. the old directory, tables and data clusters are freed (refcounts flushed by Close).
//
// A crash before 3 leaves the old directory, in which every loaded bitmap is in-use; after 3,
// the new one. A failure leaves the bitmaps in-use too; the clusters written for the new ones
// leak at worst.
func (img *Image) storeBitmaps() error {
	if img.bitmapsEdited && (!img.bitmapsOpen || len(img.bitmaps) == 0) {
		return img.storeEditedBitmaps() // bitmap_ops_store.go
	}
	if !img.bitmapsOpen || len(img.bitmaps) == 0 {
		return nil
	}
	if !img.bitmapsEdited && !slices.ContainsFunc(img.bitmaps, (*dirtyBitmap).loaded) {
		// Every bitmap was in-use at open: nothing was marked, and QEMU writes nothing.
		img.bitmapsOpen = false
		return nil
	}
	start := time.Now()
	entries := make([]bitmapEntry, len(img.bitmaps))
	var drop []*dirtyBitmap
	for i, bm := range img.bitmaps {
		entries[i] = bm.entry
		if !bm.loaded() {
			continue
		}
		off, n, err := img.storeBitmapData(bm)
		if err != nil {
			return err
		}
		drop = append(drop, bm)
		entries[i].tableOff, entries[i].tableSize = off, n
		entries[i].flags = bm.entry.flags &^ bitmapFlagInUse
	}
	if err := img.data.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync the bitmaps: %w", err)
	}
	if img.data != img.file {
		if err := img.file.Sync(); err != nil {
			return fmt.Errorf("qcow2: sync the bitmaps: %w", err)
		}
	}
	raw, dir, err := img.writeBitmapDir(entries)
	if err != nil {
		return err
	}
	if err := img.file.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync the bitmap directory: %w", err)
	}
	old := *img.hdr.Extensions.Bitmaps
	// A version 2 header has no autoclear field: after a downgrade the bitmaps are stored
	// all the same, as QEMU does (docs/bitmaps.md), and read back as inconsistent.
	if img.hdr.Version >= 3 && img.hdr.Autoclear&AutoclearBitmaps == 0 {
		return fmt.Errorf("qcow2: internal error: storing bitmaps while the autoclear bit is off")
	}
	nb := old
	nb.Count = uint32(len(entries))
	nb.DirectoryStart = dir
	nb.DirectorySize = uint64(len(raw))
	if err := img.switchBitmapDir(&old, &nb); err != nil { // bitmap_ops_store.go
		return err
	}
	img.hdr.Extensions.Bitmaps = &nb
	img.freeBitmapRun(old.DirectoryStart.cluster(img.geo), img.geo.clustersFor(old.DirectoryStart.inCluster(img.geo)+old.DirectorySize))
	for _, bm := range append(drop, img.removedBitmaps...) {
		img.freeBitmapClusters(bm)
	}
	img.removedBitmaps = nil
	for i, bm := range img.bitmaps {
		bm.entry, bm.oldData = entries[i], nil
	}
	img.bitmapsOpen = false
	if h, ok := img.hooks.(BitmapHooks); ok {
		h.BitmapsStored(time.Since(start))
	}
	img.reportBitmaps()
	return nil
}

// storeBitmapData writes bm's data clusters and table; it returns the table's offset and
// entry count (QEMU's store_bitmap).
func (img *Image) storeBitmapData(bm *dirtyBitmap) (HostOffset, uint32, error) {
	cs := img.geo.ClusterSize()
	n := bm.tableEntries(cs)
	table := make([]byte, n*8)
	buf := make([]byte, cs)
	for k := uint64(0); k < n; k++ {
		if !bm.encodeCluster(k, buf) {
			continue
		}
		c, err := img.alloc.allocMeta(1, AllocBitmap)
		if err != nil {
			return 0, 0, err
		}
		off := c.Offset(img.geo)
		if err := img.writeMeta(buf, off); err != nil {
			return 0, 0, err
		}
		binary.BigEndian.PutUint64(table[k*8:], uint64(off))
	}
	c, err := img.alloc.allocMeta(img.geo.clustersFor(uint64(len(table))), AllocBitmap)
	if err != nil {
		return 0, 0, err
	}
	off := c.Offset(img.geo)
	if err := img.writeMeta(table, off); err != nil {
		return 0, 0, err
	}
	return off, uint32(n), nil
}

// writeMeta writes b at off after the overlap check.
func (img *Image) writeMeta(b []byte, off HostOffset) error {
	if err := img.checkMetadataWrite(off, uint64(len(b)), metaNone, 0); err != nil {
		return err
	}
	if _, err := img.file.WriteAt(b, int64(off)); err != nil {
		return fmt.Errorf("qcow2: write bitmap metadata at %#x: %w", uint64(off), err)
	}
	return nil
}

// freeBitmapClusters frees the table bm was loaded from and the data clusters it named
// (QEMU's free_bitmap_clusters, without reading the table again: loadBitmap kept them); a
// run QEMU cannot free is reported and kept (bitmap_free.go).
func (img *Image) freeBitmapClusters(bm *dirtyBitmap) {
	for _, c := range bm.oldData {
		img.freeBitmapRun(c, 1)
	}
	e := &bm.entry
	if e.tableOff == 0 {
		return // added since the open: nothing on disk yet
	}
	img.freeBitmapRun(e.tableOff.cluster(img.geo), img.geo.clustersFor(uint64(e.tableSize)*8))
}

// writeBitmapDir encodes the directory of entries and writes it to newly allocated clusters,
// without a sync; it returns the encoding and where it went.
func (img *Image) writeBitmapDir(entries []bitmapEntry) ([]byte, HostOffset, error) {
	raw := encodeBitmapDirectory(entries)
	dirC, err := img.alloc.allocMeta(img.geo.clustersFor(uint64(len(raw))), AllocBitmap)
	if err != nil {
		return nil, 0, err
	}
	dir := dirC.Offset(img.geo)
	if err := img.writeMeta(raw, dir); err != nil {
		return nil, 0, err
	}
	return raw, dir, nil
}
