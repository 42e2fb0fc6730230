// L2 tables: loading with validation of every entry, the in-memory form, and the cache backend.
package qcow2

import (
	"fmt"
)

// allSubclusters is the bitmap mask of all 32 subclusters.
const allSubclusters = ^uint32(0)

// hostOf returns the host cluster offset a standard entry points at, if any. Offset 0 means
// "unallocated", except with an external data file, where offset 0 with COPIED set is the
// data file's first cluster (the spec: "The offset may only be 0 with bit 63 set ... when an
// external data file is used").
func (img *Image) hostOf(e l2Entry) (HostOffset, bool) {
	if e.Compressed() {
		return 0, false
	}
	if off := e.Offset(); off != 0 {
		return off, true
	}
	if img.data != img.file && e.copied() {
		return 0, true
	}
	return 0, false
}

// subKind classifies subcluster sc of s (any sc without extended L2, where the whole cluster
// is one subcluster).
func (img *Image) subKind(s slot, sc uint32) Kind {
	if s.e.Compressed() {
		return kindCompressed
	}
	if !img.geo.ExtendedL2 {
		if s.e.Zero() {
			return kindZero
		}
		if _, ok := img.hostOf(s.e); ok {
			return kindData
		}
		return kindUnallocated
	}
	switch {
	case s.b.Allocated()&(1<<sc) != 0:
		return kindData
	case s.b.zeroBits()&(1<<sc) != 0:
		return kindZero
	}
	return kindUnallocated
}

// validateL2 checks the entries [lo, hi) of a table just read from disk at l2Off, and records
// in t.bad the ones the spec forbids or that point outside the file: corruption, reported (and
// marked) when a request uses them.
func (img *Image) validateL2(t *l2Table, l2Off HostOffset, lo, hi l2Index) {
	fileEnd, dataEnd := img.fileEnd(), img.dataEnd()
	for i := lo; i < hi; i++ {
		if err := img.validateEntry(t.get(i), l2Off, i, fileEnd, dataEnd); err != nil {
			if t.bad == nil {
				t.bad = map[l2Index]error{}
			}
			t.bad[i] = err
		}
	}
}

func (img *Image) validateEntry(s slot, l2Off HostOffset, i l2Index, fileEnd, dataEnd uint64) error {
	g := img.geo
	e := s.e
	where := func() string { return fmt.Sprintf("L2 table %#x index %d (entry %#016x)", uint64(l2Off), i, uint64(e)) }
	if e.Compressed() {
		if img.data != img.file {
			return corruptf("%s: compressed cluster in an image with an external data file", where())
		}
		off, _ := e.compressedRange(g)
		if off >= maxHostOffset {
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
	if e.reserved() != 0 {
		return corruptf("%s: reserved bits set", where())
	}
	if uint64(e)&l2Zero != 0 && (img.hdr.Version < 3 || g.ExtendedL2) {
		return corruptf("%s: zero flag in a version 2 or extended-L2 image", where())
	}
	off := e.Offset()
	if off.inCluster(g) != 0 {
		return corruptf("%s: host offset %#x not aligned to a cluster", where(), uint64(off))
	}
	host, has := img.hostOf(e)
	if g.ExtendedL2 {
		alloc, zero := s.b.Allocated(), s.b.zeroBits()
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

// load returns the table of cluster k with no slice loaded: Image.l2Get reads the slices a
// request needs.
func (b l2Backend) load(hostCluster) (*l2Table, error) { return b.img.l2pool.table(), nil }

// flush writes the dirty slices of t, each run of adjacent ones in one write. QEMU writes its
// dirty L2 cache entries (slices of l2-cache-entry-size: the whole table when the cache maps
// the whole disk, else 4 KiB): the same blocks here, so the host file gets the same allocated
// extents.
func (b l2Backend) flush(k hostCluster, t *l2Table) error {
	img := b.img
	if t.ndirty == 0 {
		return nil
	}
	off := k.Offset(img.geo)
	if err := img.checkMetadataWrite(off, img.geo.ClusterSize(), metaL2, k); err != nil {
		return err
	}
	sb := img.caches.sliceBytes
	err := t.dirtyRuns(func(a, e int) error {
		buf := t.encodeSlices(a, e, img.l2pool.scratch(uint64(e-a)*sb))
		at := off.Add(uint64(a) * sb)
		if _, err := img.file.WriteAt(buf, int64(at)); err != nil {
			return fmt.Errorf("qcow2: write L2 table at %#x: %w", uint64(at), err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	t.clearDirty()
	return nil
}
