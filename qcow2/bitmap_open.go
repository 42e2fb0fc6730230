// Persistent bitmaps at a read-write open: each consistent one is loaded into memory, and all
// are marked in-use on disk until the clean close stores them (docs/bitmaps.md).
package qcow2

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
)

// defaultBitmapMemoryLimit is the memory the bits of an image's loaded bitmaps may take when
// OpenOptions.BitmapMemoryLimit is 0: 256 MiB, the bits of 32 bitmaps of a 4 TiB disk at
// 64 KiB granularity.
const defaultBitmapMemoryLimit = 256 << 20

// errBitmapMemory is a read-write open refused because loading the image's bitmaps would take
// more memory than OpenOptions.BitmapMemoryLimit allows.
var errBitmapMemory = fmt.Errorf("qcow2: persistent bitmaps need more memory than the bitmap memory limit allows")

// openBitmaps is what QEMU's qcow2_load_dirty_bitmaps does at an open: the directory is read
// and checked (a bad one fails the open, as in QEMU), every bitmap not in-use is loaded, and,
// read-write, those are marked in-use on disk before any guest write. Bitmaps count
// only while the autoclear bit says the extension is consistent.
func (img *Image) openBitmaps() error {
	if !img.hdr.bitmapsConsistent() {
		return img.dropIgnoredBitmapExt() // bitmap_ops_store.go
	}
	b := img.hdr.Extensions.Bitmaps
	raw := make([]byte, b.DirectorySize)
	if err := readAtFull(img.file, raw, b.DirectoryStart); err != nil {
		return fmt.Errorf("qcow2: Failed to read bitmap directory: %w", err)
	}
	size := img.size.Load()
	cs := img.geo.ClusterSize()
	entries, err := parseBitmapDirectory(raw, b.Count, cs, size)
	if err != nil {
		return fmt.Errorf("qcow2: %s: %w", img.name(), err)
	}
	limit := img.opts.BitmapMemoryLimit
	if limit == 0 {
		limit = defaultBitmapMemoryLimit
	}
	need := uint64(0)
	for _, e := range entries {
		if !e.inUse() {
			need += 8 * bitmapWords(size, e.granBits)
		}
	}
	if limit > 0 && need > uint64(limit) {
		return fmt.Errorf("%w: %s: %d bitmaps need %d bytes of memory, the limit is %d bytes (raise it, or remove bitmaps or use a larger granularity)",
			errBitmapMemory, img.name(), len(entries), need, limit)
	}
	mark := false
	for i := range entries {
		bm := newDirtyBitmap(entries[i], size)
		if !entries[i].inUse() {
			if err := img.loadBitmap(bm); err != nil {
				return err
			}
			entries[i].flags |= bitmapFlagInUse
			mark = true
		}
		img.bitmaps = append(img.bitmaps, bm)
	}
	if img.readOnly {
		return nil // served as loaded (qemu-nbd -r -B); nothing is marked or stored
	}
	ext, err := img.bitmapsExtDataOffset()
	if err != nil {
		return err
	}
	img.bitmapExtOff = ext
	img.refreshEnabledBitmaps()
	if mark {
		if err := img.rewriteBitmapDirInPlace(encodeBitmapDirectory(entries)); err != nil {
			return err
		}
	}
	img.bitmapsOpen = true
	img.reportBitmaps()
	return nil
}

// loadBitmap reads bm's table and data clusters (QEMU's load_bitmap: a table that does not
// match the disk size, or an entry with reserved bits, is refused with EINVAL).
func (img *Image) loadBitmap(bm *dirtyBitmap) error {
	e := &bm.entry
	cs := img.geo.ClusterSize()
	bm.words = make([]atomic.Uint64, bitmapWords(img.size.Load(), e.granBits))
	if bm.tableEntries(cs) != uint64(e.tableSize) {
		return fmt.Errorf("qcow2: Could not read bitmap '%s' from image: Invalid argument (its table has %d entries, the disk needs %d)",
			e.name, e.tableSize, bm.tableEntries(cs))
	}
	table, err := img.readBitmapTable(e)
	if err != nil {
		return err
	}
	buf := make([]byte, cs)
	for k, ent := range table {
		off := HostOffset(ent & bitmapEntryOffsetMask)
		switch {
		case off != 0:
			bm.oldData = append(bm.oldData, off.cluster(img.geo))
			if err := readAtFull(img.file, buf, off); err != nil {
				return fmt.Errorf("qcow2: Could not read bitmap '%s' from image: %w", e.name, err)
			}
			bm.decodeCluster(uint64(k), buf, false)
		case ent&bitmapEntryAllOnes != 0:
			bm.decodeCluster(uint64(k), buf, true)
		}
	}
	bm.shards[0].n.Store(bm.countSet())
	return nil
}

// readBitmapTable reads and checks a bitmap table (QEMU's bitmap_table_load).
func (img *Image) readBitmapTable(e *bitmapEntry) ([]uint64, error) {
	cs := img.geo.ClusterSize()
	raw := make([]byte, uint64(e.tableSize)*8)
	if err := readAtFull(img.file, raw, e.tableOff); err != nil {
		return nil, fmt.Errorf("qcow2: Could not read bitmap_table table from image for bitmap '%s': %w", e.name, err)
	}
	table := make([]uint64, e.tableSize)
	for i := range table {
		v := binary.BigEndian.Uint64(raw[i*8:])
		off := v & bitmapEntryOffsetMask
		if v&bitmapEntryReservedMask != 0 || (off != 0 && (v&bitmapEntryAllOnes != 0 || off%cs != 0)) {
			return nil, fmt.Errorf("qcow2: Could not read bitmap_table table from image for bitmap '%s': Invalid argument (entry %d is %#x)", e.name, i, v)
		}
		table[i] = v
	}
	return table, nil
}

// rewriteBitmapDirInPlace writes raw over the directory as QEMU's
// update_ext_header_and_dir_in_place does: the autoclear bit goes off (header, sync), the
// directory is written (sync), the bit comes back (header, sync). A crash in between leaves
// the bit off: QEMU then ignores the bitmaps, and their clusters are leaks.
func (img *Image) rewriteBitmapDirInPlace(raw []byte) error {
	dir := img.hdr.Extensions.Bitmaps.DirectoryStart
	if uint64(len(raw)) != img.hdr.Extensions.Bitmaps.DirectorySize {
		return fmt.Errorf("qcow2: internal error: in-place bitmap directory of %d bytes, %d on disk", len(raw), img.hdr.Extensions.Bitmaps.DirectorySize)
	}
	off := img.hdr
	off.Autoclear &^= AutoclearBitmaps
	if err := img.writeHeaderSync(&off); err != nil {
		return err
	}
	if err := img.checkMetadataWrite(dir, uint64(len(raw)), metaBitmapDir, 0); err != nil {
		return err
	}
	if _, err := img.file.WriteAt(raw, int64(dir)); err != nil {
		return fmt.Errorf("qcow2: write the bitmap directory: %w", err)
	}
	if err := img.file.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync the bitmap directory: %w", err)
	}
	return img.writeHeaderSync(&img.hdr)
}

// refreshEnabledBitmaps recomputes the list writers mark: the loaded bitmaps with the auto
// flag. Only open and close change it, with no request in flight.
func (img *Image) refreshEnabledBitmaps() {
	img.markBitmaps = img.markBitmaps[:0]
	for _, bm := range img.bitmaps {
		if bm.loaded() && bm.entry.enabled() {
			img.markBitmaps = append(img.markBitmaps, bm)
		}
	}
}

// markDirty sets the bits of every enabled bitmap over a write, write-zeroes or discard
// request, whatever it turns out to change (QEMU's bdrv_set_dirty at the end of every write
// request, successful or not). Lock-free: the list is fixed while requests run.
func (img *Image) markDirty(off, n uint64) {
	for _, bm := range img.markBitmaps {
		bm.setRange(off, n)
	}
}
