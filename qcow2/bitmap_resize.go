// Resize of an image with persistent bitmaps, as qemu-img resize 7.2 does it: every loaded
// bitmap follows the new size (new granules clean, granules past a shrunk end dropped) and is
// stored at that size at close; a bitmap left in-use refuses the resize (docs/bitmaps.md).
package qcow2

import (
	"fmt"
	"sync/atomic"
)

// bitmapResizeError refuses a resize while a bitmap of the image is in-use (it was not loaded,
// so it cannot follow), with qemu-img's message and hint, and a grow whose bitmaps would take
// more memory than OpenOptions.BitmapMemoryLimit allows (qnbd's own cap, docs/bitmaps.md).
func (img *Image) bitmapResizeError(newSize uint64) error {
	if !img.hdr.bitmapsConsistent() {
		return nil
	}
	need := uint64(0)
	for _, bm := range img.bitmaps {
		if !bm.loaded() {
			return &bitmapInconsistentError{name: bm.entry.name}
		}
		need += 8 * bitmapWords(newSize, bm.entry.granBits)
	}
	limit := img.opts.BitmapMemoryLimit
	if limit == 0 {
		limit = defaultBitmapMemoryLimit
	}
	if limit > 0 && need > uint64(limit) && newSize > img.size.Load() {
		return fmt.Errorf("%w: %s: at %d bytes, %d bitmaps need %d bytes of memory, the limit is %d bytes (remove bitmaps first)",
			errBitmapMemory, img.name(), newSize, len(img.bitmaps), need, limit)
	}
	return nil
}

// bitmapInconsistentError is a resize refused because of an in-use bitmap. Its text is
// qemu-img's (message and hint); it matches ErrUnsupported.
type bitmapInconsistentError struct{ name string }

func (e *bitmapInconsistentError) Error() string {
	return fmt.Sprintf("Bitmap '%s' is inconsistent and cannot be used\nTry block-dirty-bitmap-remove to delete this bitmap from disk", e.name)
}

func (e *bitmapInconsistentError) Is(target error) bool { return target == ErrUnsupported }

func (img *Image) resizeBitmaps(newSize uint64) { resizeBitmapWords(img.bitmaps, newSize) }

// resizeBitmapWords gives every loaded bitmap the words of a disk of newSize bytes: words
// added are clean, bits of granules past the new end are cleared (QEMU's hbitmap_truncate),
// and the set-bit counters are counted again. No request may be in flight.
func resizeBitmapWords(bms []*dirtyBitmap, newSize uint64) {
	for _, bm := range bms {
		if !bm.loaded() {
			continue
		}
		n := bitmapWords(newSize, bm.entry.granBits)
		words := make([]atomic.Uint64, n)
		for i := range min(n, uint64(len(bm.words))) {
			words[i].Store(bm.words[i].Load())
		}
		bm.granules = (newSize + 1<<bm.entry.granBits - 1) >> bm.entry.granBits
		if r := bm.granules % 64; r != 0 && n > 0 {
			words[n-1].Store(words[n-1].Load() & (1<<r - 1))
		}
		bm.words = words
		for i := range bm.shards {
			bm.shards[i].n.Store(0)
		}
		bm.shards[0].n.Store(bm.countSet())
	}
}
