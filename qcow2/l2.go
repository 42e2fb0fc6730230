// L2 tables: loading with validation of every entry, the in-memory form, and the cache backend.
package qcow2

import (
	"encoding/binary"
	"fmt"
)

// l2Table is one L2 table decoded to host-order words: one word per entry, or two (the entry
// and its subcluster bitmap) with extended L2 entries.
type l2Table struct {
	ext bool
	w   []uint64
	// bad holds the entries that failed validation when the table was loaded: a request
	// that uses one fails (and marks the image corrupt); the rest of the table stays usable.
	bad map[L2Index]error
	// syncGen is the Image.linkGen of the last link into this table whose data must be
	// durable before the table is written (publishData); 0 for none.
	syncGen uint64
	// [dlo, dhi) are the entries changed since the table was loaded or last written: only
	// the slices (cachesize.go sliceBytes) holding them are written back, unless whole is
	// set (a new table, never written yet: its cluster on disk may hold anything).
	dlo, dhi L2Index
	whole    bool
}

// check returns the validation error of entry i, if it had one.
func (t *l2Table) check(i L2Index) error {
	if t.bad == nil {
		return nil
	}
	return t.bad[i]
}

// slot is one L2 entry with its subcluster bitmap (zero without extended L2).
type slot struct {
	e L2Entry
	b SubclusterBitmap
}

func newL2Table(g Geometry) *l2Table {
	n := g.L2Entries()
	if g.ExtendedL2 {
		n *= 2
	}
	return &l2Table{ext: g.ExtendedL2, w: make([]uint64, n)}
}

func (t *l2Table) get(i L2Index) slot {
	if t.ext {
		return slot{L2Entry(t.w[2*i]), SubclusterBitmap(t.w[2*i+1])}
	}
	return slot{e: L2Entry(t.w[i])}
}

func (t *l2Table) set(i L2Index, s slot) {
	if t.bad != nil {
		delete(t.bad, i)
	}
	if t.dhi <= t.dlo {
		t.dlo, t.dhi = i, i+1
	} else {
		t.dlo, t.dhi = min(t.dlo, i), max(t.dhi, i+1)
	}
	if t.ext {
		t.w[2*i], t.w[2*i+1] = uint64(s.e), uint64(s.b)
		return
	}
	t.w[i] = uint64(s.e)
}

func (t *l2Table) clone() *l2Table {
	c := &l2Table{ext: t.ext, w: append([]uint64(nil), t.w...), syncGen: t.syncGen, whole: true}
	if t.bad != nil {
		c.bad = make(map[L2Index]error, len(t.bad))
		for k, v := range t.bad {
			c.bad[k] = v
		}
	}
	return c
}

// encodeInto encodes the table into b, which holds at least its size, and returns that part.
func (t *l2Table) encodeInto(b []byte) []byte {
	b = b[:len(t.w)*8]
	for i, v := range t.w {
		binary.BigEndian.PutUint64(b[i*8:], v)
	}
	return b
}

// l2Pool keeps the memory of evicted L2 tables for the next ones loaded, and one scratch
// buffer for reading and writing tables: at a steady rate of misses the engine then allocates
// nothing per table, and the heap stays near the cache size (peak RSS, docs/allocation.md).
// Guarded by the metadata lock, like the cache.
type l2Pool struct {
	free []*l2Table
	buf  []byte
}

// maxL2Free bounds the evicted tables kept for reuse.
const maxL2Free = 8

func (p *l2Pool) put(t *l2Table) {
	if len(p.free) < maxL2Free {
		p.free = append(p.free, t)
	}
}

// get returns a table for g, from the pool if it has one; its words are not cleared.
func (p *l2Pool) get(g Geometry) *l2Table {
	if n := len(p.free); n > 0 {
		t := p.free[n-1]
		p.free = p.free[:n-1]
		t.bad, t.syncGen, t.dlo, t.dhi, t.whole = nil, 0, 0, 0, false
		return t
	}
	return newL2Table(g)
}

func (p *l2Pool) scratch(n uint64) []byte {
	if uint64(len(p.buf)) < n {
		p.buf = make([]byte, n)
	}
	return p.buf[:n]
}

// allSubclusters is the bitmap mask of all 32 subclusters.
const allSubclusters = ^uint32(0)

// hostOf returns the host cluster offset a standard entry points at, if any. Offset 0 means
// "unallocated", except with an external data file, where offset 0 with COPIED set is the
// data file's first cluster (the spec: "The offset may only be 0 with bit 63 set ... when an
// external data file is used").
func (img *Image) hostOf(e L2Entry) (HostOffset, bool) {
	if e.Compressed() {
		return 0, false
	}
	if off := e.Offset(); off != 0 {
		return off, true
	}
	if img.data != img.file && e.Copied() {
		return 0, true
	}
	return 0, false
}

// subKind classifies subcluster sc of s (any sc without extended L2, where the whole cluster
// is one subcluster).
func (img *Image) subKind(s slot, sc uint32) Kind {
	if s.e.Compressed() {
		return KindCompressed
	}
	if !img.geo.ExtendedL2 {
		if s.e.Zero() {
			return KindZero
		}
		if _, ok := img.hostOf(s.e); ok {
			return KindData
		}
		return KindUnallocated
	}
	switch {
	case s.b.Allocated()&(1<<sc) != 0:
		return KindData
	case s.b.ZeroBits()&(1<<sc) != 0:
		return KindZero
	}
	return KindUnallocated
}

// validateL2 checks every entry of a table just read from disk at l2Off, and records in
// t.bad the ones the spec forbids or that point outside the file: corruption, reported (and
// marked) when a request uses them.
func (img *Image) validateL2(t *l2Table, l2Off HostOffset) {
	n := L2Index(img.geo.L2Entries())
	fileEnd, dataEnd := img.fileEnd(), img.dataEnd()
	for i := L2Index(0); i < n; i++ {
		if err := img.validateEntry(t.get(i), l2Off, i, fileEnd, dataEnd); err != nil {
			if t.bad == nil {
				t.bad = map[L2Index]error{}
			}
			t.bad[i] = err
		}
	}
}

func (img *Image) validateEntry(s slot, l2Off HostOffset, i L2Index, fileEnd, dataEnd uint64) error {
	g := img.geo
	e := s.e
	where := func() string { return fmt.Sprintf("L2 table %#x index %d (entry %#016x)", uint64(l2Off), i, uint64(e)) }
	if e.Compressed() {
		if img.data != img.file {
			return corruptf("%s: compressed cluster in an image with an external data file", where())
		}
		off, _ := e.CompressedRange(g)
		if off >= MaxHostOffset {
			return corruptf("%s: compressed data offset beyond 2^56", where())
		}
		if uint64(off) >= fileEnd {
			return corruptf("%s: compressed data at %#x, past the end of the %d-byte file", where(), uint64(off), fileEnd)
		}
		if g.ExtendedL2 && s.b != 0 {
			return corruptf("%s: compressed cluster with a non-zero subcluster bitmap %#x", where(), uint64(s.b))
		}
		return nil
	}
	if e.Reserved() != 0 {
		return corruptf("%s: reserved bits set", where())
	}
	if uint64(e)&l2Zero != 0 && (img.hdr.Version < 3 || g.ExtendedL2) {
		return corruptf("%s: zero flag in a version 2 or extended-L2 image", where())
	}
	off := e.Offset()
	if off.InCluster(g) != 0 {
		return corruptf("%s: host offset %#x not aligned to a cluster", where(), uint64(off))
	}
	host, has := img.hostOf(e)
	if g.ExtendedL2 {
		alloc, zero := s.b.Allocated(), s.b.ZeroBits()
		if alloc&zero != 0 {
			return corruptf("%s: subclusters %#x both allocated and reading as zero", where(), alloc&zero)
		}
		if alloc != 0 && !has {
			return corruptf("%s: allocated subclusters %#x without a host cluster", where(), alloc)
		}
	}
	if !has {
		return nil
	}
	end := fileEnd
	if img.data != img.file {
		end = dataEnd
	}
	used := !e.Zero() && (!g.ExtendedL2 || s.b.Allocated() != 0)
	if used && uint64(host) >= end {
		return corruptf("%s: data cluster at %#x, past the end of the %d-byte file", where(), uint64(host), end)
	}
	if img.data == img.file && host == 0 {
		return corruptf("%s: data cluster points at the image header", where())
	}
	return nil
}

// l2Backend loads and writes L2 tables of an image.
type l2Backend struct{ img *Image }

func (b l2Backend) load(k HostCluster) (*l2Table, error) {
	img := b.img
	off := k.Offset(img.geo)
	buf := img.l2pool.scratch(img.geo.ClusterSize())
	if err := readAtFull(img.file, buf, off); err != nil {
		return nil, fmt.Errorf("qcow2: read L2 table at %#x: %w", uint64(off), err)
	}
	t := img.l2pool.get(img.geo)
	for i := range t.w {
		t.w[i] = binary.BigEndian.Uint64(buf[i*8:])
	}
	img.validateL2(t, off)
	return t, nil
}

func (b l2Backend) flush(k HostCluster, t *l2Table) error {
	img := b.img
	off := k.Offset(img.geo)
	if err := img.checkMetadataWrite(off, img.geo.ClusterSize(), metaL2, k); err != nil {
		return err
	}
	buf := t.encodeInto(img.l2pool.scratch(img.geo.ClusterSize()))
	if !t.whole {
		// Only the blocks holding changed entries: the rest of the table on disk is what
		// the table holds (it was loaded from there, or written whole before).
		if t.dhi <= t.dlo {
			return nil
		}
		// QEMU writes dirty L2 cache entries (slices of l2-cache-entry-size: the whole
		// table when the cache maps the whole disk, else 4 KiB): the same blocks here, so
		// the host file gets the same allocated extents.
		eb := uint64(l2EntryBytes(img.geo))
		align := img.caches.sliceBytes
		a := uint64(t.dlo) * eb / align * align
		b := alignUp(uint64(t.dhi)*eb, align)
		buf, off = buf[a:b], off.Add(a)
	}
	if _, err := img.file.WriteAt(buf, int64(off)); err != nil {
		return fmt.Errorf("qcow2: write L2 table at %#x: %w", uint64(off), err)
	}
	t.dlo, t.dhi, t.whole = 0, 0, false
	return nil
}
