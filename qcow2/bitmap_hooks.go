// What an observer learns about persistent bitmaps, and what a caller can ask of them.
package qcow2

import (
	"fmt"
	"time"
)

// BitmapHooks is implemented by a Hooks value that also wants bitmap events; the engine
// checks for it with a type assertion, so plain Hooks need not change.
type BitmapHooks interface {
	// BitmapsStored reports a clean close's store of the bitmaps and how long it took.
	BitmapsStored(time.Duration)
	// BitmapDirty reports the bytes a loaded bitmap marks dirty: after a read-write open,
	// at every Flush, and after the store.
	BitmapDirty(name string, bytes uint64)
	// BitmapsInconsistent reports how many of the image's bitmaps were in-use when it was
	// opened read-write: left so by a writer that crashed, they track nothing and stay so
	// until removed. Sent with BitmapDirty.
	BitmapsInconsistent(n int)
}

// reportBitmaps sends BitmapDirty for every loaded bitmap of a writable image.
func (img *Image) reportBitmaps() {
	h, ok := img.hooks.(BitmapHooks)
	if !ok || img.readOnly {
		return
	}
	bad := 0
	for _, bm := range img.bitmaps {
		if bm.loaded() {
			h.BitmapDirty(bm.entry.name, bm.dirtyGranules()*bm.granularity())
		} else {
			bad++
		}
	}
	h.BitmapsInconsistent(bad)
}

// BitmapInfo describes one persistent bitmap of an open image.
type BitmapInfo struct {
	Name        string
	Granularity uint64
	// Enabled is the auto flag: writes set its bits.
	Enabled bool
	// InUse: the bitmap was in-use (inconsistent) when the image was opened; it is neither
	// loaded nor changed, as QEMU keeps it.
	InUse bool
	// Loaded: its bits are in memory (read-write opens load every consistent bitmap).
	Loaded bool
	// DirtyBytes is the guest bytes its set bits cover (its last granule may pass the end of
	// the disk), and MemoryBytes what its bits take in memory.
	DirtyBytes, MemoryBytes uint64
}

// Bitmaps lists the image's persistent bitmaps in directory order. A read-only open without
// OpenOptions.ReadBitmaps loads none and lists none.
func (img *Image) Bitmaps() []BitmapInfo {
	img.mu.Lock()
	defer img.mu.Unlock()
	out := make([]BitmapInfo, 0, len(img.bitmaps))
	for _, bm := range img.bitmaps {
		out = append(out, bm.info())
	}
	return out
}

func (bm *dirtyBitmap) info() BitmapInfo {
	i := BitmapInfo{Name: bm.entry.name, Granularity: bm.granularity(), Enabled: bm.entry.enabled(),
		InUse: bm.entry.inUse() && !bm.loaded(), Loaded: bm.loaded(), MemoryBytes: 8 * uint64(len(bm.words))}
	if bm.loaded() {
		i.DirtyBytes = bm.dirtyGranules() * bm.granularity()
	}
	return i
}

// BitmapExtent is a run of granules of one state.
type BitmapExtent struct {
	Length uint64
	Dirty  bool
}

// FindBitmap describes the named bitmap of the image or, failing that, of the first qcow2
// image down its backing chain that has one (qemu-nbd -B looks there too).
func (img *Image) FindBitmap(name string) (BitmapInfo, bool) {
	bm := img.findBitmap(name)
	if bm == nil {
		return BitmapInfo{}, false
	}
	return bm.info(), true
}

func (img *Image) findBitmap(name string) *dirtyBitmap {
	for _, b := range img.bitmaps {
		if b.entry.name == name {
			return b
		}
	}
	if l, ok := img.backing.(qcow2Layer); ok {
		return l.img.findBitmap(name)
	}
	return nil
}

// maxBitmapExtents bounds one BitmapExtents answer; callers ask again for the rest.
const maxBitmapExtents = 4096

// BitmapExtents describes [off, off+n) of the named loaded bitmap (FindBitmap's) as runs of
// dirty and clean bytes, at the bitmap's granularity (runs are cut at off and off+n). At most
// maxBitmapExtents runs are returned: they may cover less than n bytes, never none.
func (img *Image) BitmapExtents(name string, off, n uint64) ([]BitmapExtent, error) {
	if err := img.checkRequest(off, n, false); err != nil {
		return nil, err
	}
	bm := img.findBitmap(name)
	if bm == nil || !bm.loaded() {
		return nil, fmt.Errorf("%w: no loaded bitmap '%s'", ErrUnsupported, name)
	}
	var out []BitmapExtent
	for end := off + n; off < end; {
		g := granuleIndex(off >> bm.entry.granBits)
		next := min(end, (uint64(g)+1)<<bm.entry.granBits)
		d := uint64(g) < bm.granules && bm.get(g) // a backing image's bitmap may be shorter
		k := len(out)
		switch {
		case k > 0 && out[k-1].Dirty == d:
			out[k-1].Length += next - off
		case k == maxBitmapExtents:
			return out, nil
		default:
			out = append(out, BitmapExtent{Length: next - off, Dirty: d})
		}
		off = next
	}
	return out, nil
}
