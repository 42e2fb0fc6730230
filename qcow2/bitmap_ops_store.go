// Storing bitmaps the operations of bitmap_ops.go changed, where the store at close
// (bitmap_store.go) meets cases a plain serve never does: the header's bitmaps extension
// switched to a directory with another count, created for an image that had no bitmaps, or
// dropped with the last bitmap (docs/bitmaps.md).
package qcow2

import (
	"encoding/binary"
	"fmt"
)

// atomicSector is the unit a disk writes whole or not at all.
const atomicSector = 512

// switchBitmapDir points the bitmaps extension at a new directory. When only the directory
// offset changes, or the 24 bytes of the extension's data share one sector, it is one write
// (a sector is written whole or not at all); otherwise the autoclear bit is cleared around
// the write, so that a crash leaves the bitmaps ignored rather than a torn extension.
func (img *Image) switchBitmapDir(old, nb *BitmapsExtension) error {
	var b [bitmapsExtSize]byte
	binary.BigEndian.PutUint32(b[0:], nb.Count)
	binary.BigEndian.PutUint32(b[4:], nb.Reserved)
	binary.BigEndian.PutUint64(b[8:], nb.DirectorySize)
	binary.BigEndian.PutUint64(b[16:], uint64(nb.DirectoryStart))
	off, data := img.bitmapExtOff, b[:]
	if old.Count == nb.Count && old.DirectorySize == nb.DirectorySize {
		off, data = off+16, data[16:]
	}
	torn := off/atomicSector != (off+uint64(len(data))-1)/atomicSector
	if torn {
		h := img.hdr
		h.Autoclear &^= AutoclearBitmaps
		if err := img.writeHeaderSync(&h); err != nil {
			return err
		}
	}
	if _, err := img.file.WriteAt(data, int64(off)); err != nil {
		return fmt.Errorf("qcow2: switch the bitmap directory: %w", err)
	}
	if err := img.file.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync the header: %w", err)
	}
	if torn {
		return img.writeHeaderSync(&img.hdr)
	}
	return nil
}

// storeEditedBitmaps stores the bitmaps of an image that had no consistent bitmaps extension
// at open (the first ones were added), or whose last bitmap was removed.
func (img *Image) storeEditedBitmaps() error {
	if len(img.bitmaps) == 0 {
		return img.dropBitmapExt()
	}
	return img.createBitmapExt()
}

// createBitmapExt writes the data clusters, tables and directory of the added bitmaps to new
// clusters (sync), then the header with the extension but the autoclear bit off (sync), then
// the bit (sync). A crash before the last write leaves the bitmaps ignored and their clusters
// leaked, which is how QEMU sees the image before its own store too.
func (img *Image) createBitmapExt() error {
	entries := make([]bitmapEntry, len(img.bitmaps))
	for i, bm := range img.bitmaps {
		entries[i] = bm.entry
		off, n, err := img.storeBitmapData(bm)
		if err != nil {
			return err
		}
		entries[i].tableOff, entries[i].tableSize = off, n
		entries[i].flags &^= bitmapFlagInUse
	}
	raw, dir, err := img.writeBitmapDir(entries) // bitmap_store.go
	if err != nil {
		return err
	}
	if err := img.syncBitmapFiles(); err != nil {
		return err
	}
	h := img.hdr
	h.Extensions.Bitmaps = &BitmapsExtension{Count: uint32(len(entries)), DirectorySize: uint64(len(raw)), DirectoryStart: dir}
	h.Autoclear &^= AutoclearBitmaps
	if err := img.rewriteHeader(&h); err != nil {
		return err
	}
	h.Autoclear |= AutoclearBitmaps
	if err := img.writeHeaderSync(&h); err != nil {
		return err
	}
	img.hdr = h
	for i, bm := range img.bitmaps {
		bm.entry = entries[i]
	}
	img.bitmapsEdited, img.bitmapsOpen = false, false
	img.reportBitmaps()
	return nil
}

// dropBitmapExt removes the bitmaps extension once its last bitmap is removed, as QEMU does:
// the autoclear bit goes off first (one write in the first sector, sync), so that a crash
// leaves the bitmaps ignored; then the header without the extension (sync); then the old
// directory and the removed bitmaps' clusters are freed.
func (img *Image) dropBitmapExt() error {
	old := img.hdr.Extensions.Bitmaps
	h := img.hdr
	h.Autoclear &^= AutoclearBitmaps
	if err := img.writeHeaderSync(&h); err != nil {
		return err
	}
	h.Extensions.Bitmaps = nil
	if err := img.rewriteHeader(&h); err != nil {
		return err
	}
	if old != nil && img.bitmapsOpen {
		img.alloc.free(old.DirectoryStart.cluster(img.geo), img.geo.clustersFor(old.DirectoryStart.inCluster(img.geo)+old.DirectorySize), false)
		for _, bm := range img.removedBitmaps {
			img.freeBitmapClusters(bm)
		}
	}
	img.removedBitmaps = nil
	img.bitmapsEdited, img.bitmapsOpen = false, false
	img.reportBitmaps()
	return nil
}

// syncBitmapFiles makes the bitmap clusters written so far durable.
func (img *Image) syncBitmapFiles() error {
	if err := img.data.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync the bitmaps: %w", err)
	}
	if img.data != img.file {
		if err := img.file.Sync(); err != nil {
			return fmt.Errorf("qcow2: sync the bitmaps: %w", err)
		}
	}
	return nil
}

// BitmapsIgnored reports a bitmaps extension QEMU ignores because the autoclear bit is off (a
// program without bitmap support wrote the image, or a crash came in the middle of a change
// of the extension): QEMU warns about it at every open, and a read-write open drops it.
func (h *Header) BitmapsIgnored() bool {
	return h.Extensions.Bitmaps != nil && h.Autoclear&AutoclearBitmaps == 0
}

// dropIgnoredBitmapExt removes, at a read-write open, a bitmaps extension QEMU ignores, as
// QEMU's open does (its clusters stay leaked, for check -r). The autoclear bit is off already,
// so a torn header write leaves an extension that is ignored all the same.
func (img *Image) dropIgnoredBitmapExt() error {
	img.bitmapsIgnored = img.hdr.BitmapsIgnored()
	if img.readOnly || !img.bitmapsIgnored {
		return nil
	}
	h := img.hdr
	h.Extensions.Bitmaps = nil
	return img.rewriteHeader(&h)
}

// BitmapsIgnoredAtOpen reports whether the image had, when it was opened, a bitmaps extension
// QEMU ignores (Header.BitmapsIgnored; a read-write open has dropped it since).
func (img *Image) BitmapsIgnoredAtOpen() bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	return img.bitmapsIgnored || img.hdr.BitmapsIgnored()
}
