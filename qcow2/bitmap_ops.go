// Managing persistent bitmaps on an open image, as qemu-img bitmap does through QEMU's
// block-dirty-bitmap-* operations: add, remove, clear, enable, disable and merge. Each one
// changes the bitmaps in memory; the clean close stores them (bitmap_store.go,
// bitmap_ops_store.go), so that a crash leaves the bitmaps as they were or in-use, never
// half-changed (docs/bitmaps.md).
package qcow2

import (
	"fmt"
	"math/bits"
	"slices"
	"sync/atomic"
)

// BitmapError is a refused bitmap operation; Msg is QEMU's text for it. CantStore marks QEMU's
// refusals to make a new bitmap persistent, which qemu-img prints after "Can't make bitmap
// 'NAME' persistent in 'NODE': " (the node name is the caller's to give). Hint, when set, is
// QEMU's second line ("Try block-dirty-bitmap-remove ...").
type BitmapError struct {
	Msg       string
	Hint      string
	CantStore bool
}

func (e *BitmapError) Error() string { return e.Msg }

// Limits of a bitmap directory (QEMU's QCOW2_MAX_BITMAPS and QCOW2_MAX_BITMAP_DIRECTORY_SIZE).
const (
	bitmapMaxCount   = 65535
	bitmapMaxDirSize = MaxBitmapDirectoryBytes
)

// bitmapNotFound is block_dirty_bitmap_lookup's refusal.
func bitmapNotFound(name string) error {
	return &BitmapError{Msg: fmt.Sprintf("Dirty bitmap '%s' not found", name)}
}

// bitmapInconsistent is bdrv_dirty_bitmap_check's refusal of an in-use bitmap.
func bitmapInconsistent(name string) error {
	return &BitmapError{Msg: fmt.Sprintf("Bitmap '%s' is inconsistent and cannot be used", name),
		Hint: "Try block-dirty-bitmap-remove to delete this bitmap from disk"}
}

// DefaultBitmapGranularity is the granularity a bitmap added without one gets: the cluster
// size, kept between 4 KiB and 64 KiB (QEMU's bdrv_get_default_bitmap_granularity).
func (img *Image) DefaultBitmapGranularity() uint64 {
	return min(max(img.geo.ClusterSize(), 4096), 65536)
}

// ownBitmap is the image's own bitmap of that name (not its backing chain's), or nil.
func (img *Image) ownBitmap(name string) *dirtyBitmap {
	for _, b := range img.bitmaps {
		if b.entry.name == name {
			return b
		}
	}
	return nil
}

// usableBitmap looks name up and refuses an in-use one, as the operations that read or change
// bits do.
func (img *Image) usableBitmap(name string) (*dirtyBitmap, error) {
	bm := img.ownBitmap(name)
	if bm == nil {
		return nil, bitmapNotFound(name)
	}
	if !bm.loaded() {
		return nil, bitmapInconsistent(name)
	}
	return bm, nil
}

// bitmapEdit runs f with requests excluded and the caches flushed, then marks the bitmaps to
// be stored at close and recomputes the list writers mark.
func (img *Image) bitmapEdit(f func() error) error {
	return img.amendLocked(func() error {
		err := f()
		img.refreshEnabledBitmaps()
		return err
	})
}

// AddBitmap adds an empty persistent bitmap, enabled unless disabled, with QEMU's checks in
// QEMU's order (block_dirty_bitmap_add, qcow2_co_can_store_new_dirty_bitmap,
// check_constraints_on_bitmap). granularity 0 means DefaultBitmapGranularity; any other value
// must be a power of two of at least 512 (the caller passes what QEMU would: the low 32 bits
// of the user's number).
func (img *Image) AddBitmap(name string, granularity uint64, disabled bool) error {
	return img.bitmapEdit(func() error {
		if name == "" {
			return &BitmapError{Msg: "Bitmap name cannot be empty"}
		}
		if granularity == 0 {
			granularity = img.DefaultBitmapGranularity()
		} else if granularity < 512 || granularity&(granularity-1) != 0 || granularity > 1<<31 {
			return &BitmapError{Msg: "Granularity must be power of 2 and at least 512"}
		}
		if img.ownBitmap(name) != nil {
			return &BitmapError{Msg: "Bitmap already exists: " + name}
		}
		if err := img.canStoreBitmap(name, granularity); err != nil {
			return err
		}
		gb := uint8(bits.TrailingZeros64(granularity))
		size := img.size.Load()
		if err := img.checkBitmapMemory(8 * bitmapWords(size, gb)); err != nil {
			return err
		}
		e := bitmapEntry{granBits: gb, name: name}
		if !disabled {
			e.flags = bitmapFlagAuto
		}
		bm := newDirtyBitmap(e, size)
		bm.words = make([]atomic.Uint64, bitmapWords(size, gb))
		// QEMU stores the bitmaps found on disk first, then the new ones newest first.
		at := len(img.bitmaps)
		for at > 0 && img.bitmaps[at-1].entry.tableOff == 0 {
			at--
		}
		img.bitmaps = slices.Insert(img.bitmaps, at, bm)
		img.bitmapsEdited = true
		return nil
	})
}

// canStoreBitmap is qcow2_co_can_store_new_dirty_bitmap after its name check.
func (img *Image) canStoreBitmap(name string, granularity uint64) error {
	refuse := func(msg string) error { return &BitmapError{Msg: msg, CantStore: true} }
	if img.hdr.Version < 3 {
		return refuse("Cannot store dirty bitmaps in qcow2 v2 files")
	}
	cs := img.geo.ClusterSize()
	gb := uint8(bits.TrailingZeros64(granularity))
	size := img.size.Load()
	need := ((size+granularity-1)>>gb + 7) / 8 // QEMU's get_bitmap_bytes_needed
	if need > bitmapMaxPhysBytes || need > maxBitmapTableEntries*cs {
		return refuse("Too much space will be occupied by the bitmap. Use larger granularity")
	}
	if len(name) > bitmapMaxName {
		return refuse(fmt.Sprintf("Name length exceeds maximum (%d characters)", bitmapMaxName))
	}
	dir := bitmapEntrySize(name)
	for _, b := range img.bitmaps {
		dir += bitmapEntrySize(b.entry.name)
	}
	if len(img.bitmaps)+1 > bitmapMaxCount {
		return refuse("Maximum number of persistent bitmaps is already reached")
	}
	if dir > bitmapMaxDirSize {
		return refuse("Not enough space in the bitmap directory")
	}
	return nil
}

// checkBitmapMemory refuses a bitmap whose bits would take the image's loaded bitmaps past
// OpenOptions.BitmapMemoryLimit (docs/bitmaps.md).
func (img *Image) checkBitmapMemory(more uint64) error {
	limit := img.opts.BitmapMemoryLimit
	if limit == 0 {
		limit = defaultBitmapMemoryLimit
	}
	if limit < 0 {
		return nil
	}
	total := more
	for _, b := range img.bitmaps {
		total += 8 * uint64(len(b.words))
	}
	if total > uint64(limit) {
		return fmt.Errorf("%w: %s: the bitmaps would need %d bytes of memory, the limit is %d bytes", errBitmapMemory, img.name(), total, limit)
	}
	return nil
}

// RemoveBitmap removes a persistent bitmap, in-use or not (QEMU's
// qcow2_co_remove_persistent_dirty_bitmap). Its clusters are freed once the close has stored
// the directory without it.
func (img *Image) RemoveBitmap(name string) error {
	return img.bitmapEdit(func() error {
		bm := img.ownBitmap(name)
		if bm == nil {
			return bitmapNotFound(name)
		}
		if !bm.loaded() && bm.entry.tableOff != 0 && bm.oldData == nil {
			bm.oldData = img.bitmapDataClusters(&bm.entry) // best effort: unreadable ones leak
		}
		out := img.bitmaps[:0]
		for _, b := range img.bitmaps {
			if b != bm {
				out = append(out, b)
			}
		}
		img.bitmaps = out
		img.removedBitmaps = append(img.removedBitmaps, bm)
		img.bitmapsEdited = true
		return nil
	})
}

// bitmapDataClusters lists the data clusters an unloaded bitmap's table names (QEMU's
// free_bitmap_clusters reads the table the same way); nil if the table cannot be read or
// names clusters past the end of the file.
func (img *Image) bitmapDataClusters(e *bitmapEntry) []hostCluster {
	table, err := img.readBitmapTable(e)
	if err != nil {
		return nil
	}
	var out []hostCluster
	for _, ent := range table {
		if off := HostOffset(ent & bitmapEntryOffsetMask); off != 0 {
			if uint64(off) >= img.fileSize {
				return nil
			}
			out = append(out, off.cluster(img.geo))
		}
	}
	return out
}

// ClearBitmap makes every granule of a bitmap clean.
func (img *Image) ClearBitmap(name string) error {
	return img.bitmapEdit(func() error {
		bm, err := img.usableBitmap(name)
		if err != nil {
			return err
		}
		for i := range bm.words {
			bm.words[i].Store(0)
		}
		for i := range bm.shards {
			bm.shards[i].n.Store(0)
		}
		img.bitmapsEdited = true
		return nil
	})
}

// EnableBitmap sets (enable) or clears the bitmap's auto flag: whether writes mark it.
func (img *Image) EnableBitmap(name string, enable bool) error {
	return img.bitmapEdit(func() error {
		bm, err := img.usableBitmap(name)
		if err != nil {
			return err
		}
		if enable {
			bm.entry.flags |= bitmapFlagAuto
		} else {
			bm.entry.flags &^= bitmapFlagAuto
		}
		img.bitmapsEdited = true
		return nil
	})
}

// MergeBitmap sets in the bitmap dst every granule that covers a dirty granule of the bitmap
// srcName of src (src may be img itself; another image must be open with
// OpenOptions.ReadBitmaps; nil is an image without bitmaps, such as a raw one). The granularities may differ; the disk sizes may not. The checks
// come in QEMU's order (block_dirty_bitmap_merge): dst found, src found, src consistent, the
// sizes, dst consistent.
func (img *Image) MergeBitmap(dst string, src *Image, srcName string) error {
	var sbm *dirtyBitmap
	var srcSize uint64
	find := func() error {
		if img.ownBitmap(dst) == nil {
			return bitmapNotFound(dst)
		}
		if src != nil {
			sbm = src.ownBitmap(srcName)
		}
		if sbm == nil {
			return bitmapNotFound(srcName)
		}
		if !sbm.loaded() {
			return bitmapInconsistent(srcName)
		}
		srcSize = src.size.Load()
		return nil
	}
	if src == nil {
		return img.bitmapEdit(find)
	}
	if src != img {
		src.mu.Lock()
		err := find()
		src.mu.Unlock()
		if err != nil {
			return err
		}
	}
	return img.bitmapEdit(func() error {
		if src == img {
			if err := find(); err != nil {
				return err
			}
		}
		if size := img.size.Load(); size != srcSize {
			return &BitmapError{Msg: fmt.Sprintf("Bitmaps are of different sizes (destination size is %d, source size is %d) and can't be merged", size, srcSize)}
		}
		dbm, err := img.usableBitmap(dst)
		if err != nil {
			return err
		}
		g := sbm.granularity()
		for w := range sbm.words {
			for v := sbm.words[w].Load(); v != 0; v &= v - 1 {
				i := uint64(w)*64 + uint64(bits.TrailingZeros64(v))
				dbm.setRange(i*g, g)
			}
		}
		img.bitmapsEdited = true
		return nil
	})
}
