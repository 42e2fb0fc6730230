// Looking up L2 entries: the table from the cache, and the slices a request needs from disk.
package qcow2

import "fmt"

// l2Get returns the L2 table in cluster c with the slices holding entries [lo, hi) loaded
// (hi > lo). A lookup is a cache hit when every one of those slices was in memory: hits and
// misses are counted per slice range, as QEMU's cache counts per entry. Called with mu held.
func (img *Image) l2Get(c hostCluster, lo, hi l2Index) (*l2Table, error) {
	t, err := img.l2.get(c)
	if err != nil {
		return nil, err
	}
	k0, k1 := t.sliceOf(lo), t.sliceOf(hi-1)
	hit := true
	for k := k0; k <= k1; k++ {
		if !t.loaded(k) {
			hit = false
			break
		}
	}
	img.hooks.CacheAccess(CacheL2, hit)
	if hit {
		return t, nil
	}
	err = img.loadSlices(c, t, k0, k1+1)
	img.l2.reweigh(c)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// l2GetAll returns the L2 table in cluster c with every slice loaded.
func (img *Image) l2GetAll(c hostCluster) (*l2Table, error) {
	return img.l2Get(c, 0, l2Index(img.geo.l2Entries()))
}

// loadSlices reads the slices [a, b) of t that are not in memory, each run of adjacent ones
// in one read, and validates their entries.
func (img *Image) loadSlices(c hostCluster, t *l2Table, a, b int) error {
	sb := img.caches.sliceBytes
	per := l2Index(1) << t.shift
	off := c.Offset(img.geo)
	for k := a; k < b; {
		if t.loaded(k) {
			k++
			continue
		}
		e := k + 1
		for e < b && !t.loaded(e) {
			e++
		}
		at := off.Add(uint64(k) * sb)
		buf := img.l2pool.scratch(uint64(e-k) * sb)
		if err := readAtFull(img.file, buf, at); err != nil {
			return fmt.Errorf("qcow2: read L2 table at %#x: %w", uint64(at), err)
		}
		for j := k; j < e; j++ {
			t.decodeSlice(j, buf[uint64(j-k)*sb:uint64(j-k+1)*sb])
			if !t.shared(j) {
				img.validateL2(t, off, l2Index(j)*per, l2Index(j+1)*per)
			}
		}
		k = e
	}
	return nil
}

// l2Span returns the L2 indexes [lo, hi) of the guest range [from, to) (to > from), which lies
// inside one table.
func (g Geometry) l2Span(from, to uint64) (l2Index, l2Index) {
	return GuestOffset(from).cluster(g).l2Index(g), GuestOffset(to-1).cluster(g).l2Index(g) + 1
}
