// A persistent dirty bitmap held in memory while the image is open: one bit per granule,
// set without locks by concurrent writers (docs/bitmaps.md).
package qcow2

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"
)

// granuleIndex numbers the granules of a bitmap (guest offset >> granularity bits).
type granuleIndex uint64

// dirtyBitmap is one bitmap of the directory. An entry that was in-use at open (or, read-only,
// that is not loaded) has no words: it is kept as it is on disk and never stored.
type dirtyBitmap struct {
	entry    bitmapEntry     // as found at open
	words    []atomic.Uint64 // bit i of word w is granule 64w+i; nil when not loaded
	granules uint64          // granules covering the disk
	// shards count the set bits, spread by word so that writers to different regions do
	// not share a cache line (the sum is what Image.Bitmaps and the metrics report).
	shards [bitmapShards]paddedCount
	// oldData are the data clusters of the table loaded at open, freed with that table once
	// a store has switched to new ones (read at open, so a store needs no read to free).
	oldData []hostCluster
}

// bitmapWords is the number of 64-bit words a bitmap of the disk size at this granularity
// needs: the memory it costs is 8 bytes per word.
func bitmapWords(diskSize uint64, granBits uint8) uint64 {
	g := (diskSize + 1<<granBits - 1) >> granBits
	return (g + 63) / 64
}

// bitmapShards is the number of set-bit counters of a bitmap.
const bitmapShards = 16

// paddedCount is a counter alone on its cache line.
type paddedCount struct {
	n atomic.Uint64
	_ [56]byte
}

// dirtyGranules is the number of set bits.
func (b *dirtyBitmap) dirtyGranules() uint64 {
	n := uint64(0)
	for i := range b.shards {
		n += b.shards[i].n.Load()
	}
	return n
}

func newDirtyBitmap(e bitmapEntry, diskSize uint64) *dirtyBitmap {
	return &dirtyBitmap{entry: e, granules: (diskSize + 1<<e.granBits - 1) >> e.granBits}
}

func (b *dirtyBitmap) loaded() bool { return b.words != nil }

// granularity is the bytes one bit covers.
func (b *dirtyBitmap) granularity() uint64 { return 1 << b.entry.granBits }

// setRange sets the bits of every granule [off, off+n) touches. Words whose bits are all set
// already are only read, so writers to one region do not bounce a cache line between them;
// the newly set bits are counted in the word's shard.
func (b *dirtyBitmap) setRange(off, n uint64) {
	if n == 0 || b.words == nil {
		return
	}
	first := off >> b.entry.granBits
	last := (off + n - 1) >> b.entry.granBits
	if last >= b.granules {
		last = b.granules - 1
	}
	if first > last {
		return
	}
	for w := first / 64; w <= last/64; w++ {
		lo, hi := uint64(0), uint64(63)
		if w == first/64 {
			lo = first % 64
		}
		if w == last/64 {
			hi = last % 64
		}
		mask := (^uint64(0) >> (63 - hi)) &^ (1<<lo - 1)
		word := &b.words[w]
		if word.Load()&mask != mask {
			if n := bits.OnesCount64(mask &^ word.Or(mask)); n > 0 {
				b.shards[w%bitmapShards].n.Add(uint64(n))
			}
		}
	}
}

// get reports whether granule i is dirty.
func (b *dirtyBitmap) get(i granuleIndex) bool {
	return b.words[i/64].Load()&(1<<(i%64)) != 0
}

// countSet is the number of dirty granules.
func (b *dirtyBitmap) countSet() uint64 {
	n := uint64(0)
	for i := range b.words {
		n += uint64(bits.OnesCount64(b.words[i].Load()))
	}
	return n
}

// granulesPerCluster is how many granules one bitmap data cluster holds.
func granulesPerCluster(cs uint64) uint64 { return cs * 8 }

// tableEntries is the bitmap table size this bitmap needs: one entry per data cluster
// (QEMU's size_to_clusters of the serialization size, which rounds to 64-bit words).
func (b *dirtyBitmap) tableEntries(cs uint64) uint64 {
	return (uint64(len(b.words))*8 + cs - 1) / cs
}

// encodeCluster serializes data cluster k into buf (one cluster), as QEMU's
// bdrv_dirty_bitmap_serialize_part lays bits out: granule j is bit j%8 of byte j/8. It
// reports whether any bit is set.
func (b *dirtyBitmap) encodeCluster(k uint64, buf []byte) bool {
	clear(buf)
	perWord := uint64(len(buf)) / 8
	any := false
	for i := uint64(0); i < perWord; i++ {
		w := k*perWord + i
		if w >= uint64(len(b.words)) {
			break
		}
		v := b.words[w].Load()
		if v != 0 {
			any = true
			binary.LittleEndian.PutUint64(buf[i*8:], v)
		}
	}
	return any
}

// decodeCluster loads data cluster k from buf (ones: the all-ones table flag). Bits past the
// last granule are ignored, as QEMU's deserialization does.
func (b *dirtyBitmap) decodeCluster(k uint64, buf []byte, ones bool) {
	perWord := granulesPerCluster(uint64(len(buf))) / 64
	for i := uint64(0); i < perWord; i++ {
		w := k*perWord + i
		if w >= uint64(len(b.words)) {
			break
		}
		v := ^uint64(0)
		if !ones {
			v = binary.LittleEndian.Uint64(buf[i*8:])
		}
		if rest := b.granules - w*64; rest < 64 {
			v &= 1<<rest - 1
		}
		b.words[w].Store(v)
	}
}
