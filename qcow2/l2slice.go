// L2 tables held as slices: each slice of l2-cache-entry-size bytes is loaded, kept dirty and
// written back on its own, as QEMU's L2 cache does since 2.12 (docs/allocation.md, "L2 slices").
package qcow2

import (
	"encoding/binary"
	"math/bits"
)

// l2Table is one L2 table, decoded to host-order words (one per entry, or two, the entry and
// its subcluster bitmap, with extended L2 entries) in slices of cacheSizes.sliceBytes. A slice
// is loaded from disk only when a request needs one of its entries (Image.l2Get), so a miss
// reads one slice, not the whole cluster. A slice that reads as all zeros shares the pool's
// zero slice and costs no memory until an entry of it is set.
type l2Table struct {
	ext   bool
	shift uint // log2 of the entries per slice
	pool  *l2Pool
	// sl holds each slice's words: nil when not loaded, pool.zero when all zero and not owned.
	sl [][]uint64
	// owned counts the slices with memory of their own (the cache's weight of the table).
	owned int
	// bad holds the loaded entries that failed validation: a request that uses one fails
	// (and marks the image corrupt); the rest of the table stays usable.
	bad map[l2Index]error
	// syncGen is the Image.linkGen of the last link into this table whose data must be
	// durable before the table is written (publishData); 0 for none.
	syncGen uint64
	// dirty has a bit per slice changed since it was loaded or last written: write-back
	// writes those slices only (a new table in a cluster that may hold anything has every
	// bit set).
	dirty  []uint64
	ndirty int
}

// check returns the validation error of entry i, if it had one.
func (t *l2Table) check(i l2Index) error {
	if t.bad == nil {
		return nil
	}
	return t.bad[i]
}

// slot is one L2 entry with its subcluster bitmap (zero without extended L2).
type slot struct {
	e l2Entry
	b subclusterBitmap
}

// slices is the number of slices of the table.
func (t *l2Table) slices() int { return len(t.sl) }

// sliceOf returns the slice holding entry i.
func (t *l2Table) sliceOf(i l2Index) int { return int(i >> t.shift) }

// loaded reports whether slice k is in memory.
func (t *l2Table) loaded(k int) bool { return t.sl[k] != nil }

// shared reports whether slice k is the pool's zero slice.
func (t *l2Table) shared(k int) bool { return len(t.sl[k]) > 0 && &t.sl[k][0] == &t.pool.zero[0] }

// words returns the words of entry i's slice and the entry's first word in it. Reading an
// entry whose slice was not loaded is a bug in the caller (every lookup goes through l2Get
// with the range it uses), not a state of the image.
func (t *l2Table) words(i l2Index) ([]uint64, int) {
	s := t.sl[i>>t.shift]
	if s == nil {
		panic("qcow2: L2 entry read from a slice that was not loaded")
	}
	j := int(i & (1<<t.shift - 1))
	if t.ext {
		j *= 2
	}
	return s, j
}

func (t *l2Table) get(i l2Index) slot {
	s, j := t.words(i)
	if t.ext {
		return slot{l2Entry(s[j]), subclusterBitmap(s[j+1])}
	}
	return slot{e: l2Entry(s[j])}
}

func (t *l2Table) set(i l2Index, v slot) {
	if t.bad != nil {
		delete(t.bad, i)
	}
	k := t.sliceOf(i)
	if t.sl[k] == nil {
		panic("qcow2: L2 entry set in a slice that was not loaded")
	}
	if t.shared(k) {
		t.sl[k] = t.pool.slice(true)
		t.owned++
	}
	t.markSlice(k)
	s, j := t.words(i)
	if t.ext {
		s[j], s[j+1] = uint64(v.e), uint64(v.b)
		return
	}
	s[j] = uint64(v.e)
}

// markSlice marks slice k dirty.
func (t *l2Table) markSlice(k int) {
	if t.dirty[k/64]&(1<<(k%64)) == 0 {
		t.dirty[k/64] |= 1 << (k % 64)
		t.ndirty++
	}
}

func (t *l2Table) sliceDirty(k int) bool { return t.dirty[k/64]&(1<<(k%64)) != 0 }

// markAllDirty marks every slice dirty: the table is written whole at its next write-back.
func (t *l2Table) markAllDirty() {
	for k := range t.sl {
		t.markSlice(k)
	}
}

func (t *l2Table) clearDirty() {
	clear(t.dirty)
	t.ndirty = 0
}

// zeroAll makes every slice loaded and all zero (a new table).
func (t *l2Table) zeroAll() {
	for k := range t.sl {
		t.setSlice(k, t.pool.zero)
	}
}

// setSlice replaces slice k, giving the memory of the one it held back to the pool.
func (t *l2Table) setSlice(k int, s []uint64) {
	if old := t.sl[k]; old != nil && !t.shared(k) {
		t.pool.putSlice(old)
		t.owned--
	}
	t.sl[k] = s
	if s != nil && !t.shared(k) {
		t.owned++
	}
}

// clone returns a copy of t, every slice of which must be loaded; the copy is dirty whole.
func (t *l2Table) clone() *l2Table {
	c := t.pool.table()
	c.syncGen = t.syncGen
	for k, s := range t.sl {
		if t.shared(k) {
			c.setSlice(k, t.pool.zero)
			continue
		}
		n := t.pool.slice(false)
		copy(n, s)
		c.setSlice(k, n)
	}
	if t.bad != nil {
		c.bad = make(map[l2Index]error, len(t.bad))
		for k, v := range t.bad {
			c.bad[k] = v
		}
	}
	c.markAllDirty()
	return c
}

// dirtyRuns calls fn for each run [a, b) of consecutive dirty slices, in order.
func (t *l2Table) dirtyRuns(fn func(a, b int) error) error {
	for a := 0; a < len(t.sl); {
		if !t.sliceDirty(a) {
			a++
			continue
		}
		b := a + 1
		for b < len(t.sl) && t.sliceDirty(b) {
			b++
		}
		if err := fn(a, b); err != nil {
			return err
		}
		a = b
	}
	return nil
}

// encodeSlices encodes slices [a, b) into buf, which holds at least their size, and returns
// that part.
func (t *l2Table) encodeSlices(a, b int, buf []byte) []byte {
	n := 0
	for k := a; k < b; k++ {
		for _, v := range t.sl[k] {
			binary.BigEndian.PutUint64(buf[n:], v)
			n += 8
		}
	}
	return buf[:n]
}

// decodeSlice fills slice k from b (its on-disk bytes): the zero slice when b is all zeros.
func (t *l2Table) decodeSlice(k int, b []byte) {
	if zeroWords(b) {
		t.setSlice(k, t.pool.zero)
		return
	}
	s := t.pool.slice(false)
	for j := range s {
		s[j] = binary.BigEndian.Uint64(b[j*8:])
	}
	t.setSlice(k, s)
}

func zeroWords(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// l2Pool makes the tables and slices of one image and keeps the memory of evicted ones for the
// next, with one scratch buffer for reading and writing slices: at a steady rate of misses the
// engine then allocates little per miss, and the heap stays near the cache size (peak RSS,
// docs/allocation.md). Guarded by the metadata lock, like the cache.
type l2Pool struct {
	ext        bool
	shift      uint
	nslices    int
	sliceWords int
	zero       []uint64
	tables     []*l2Table
	free       [][]uint64
	buf        []byte
}

// Bounds on the evicted tables and slices kept for reuse.
const (
	maxL2FreeTables = 8
	maxL2FreeSlices = 64
)

// init sizes the pool for tables of geometry g cut into slices of sliceBytes.
func (p *l2Pool) init(g Geometry, sliceBytes uint64) {
	eb := uint64(l2EntryBytes(g))
	per := sliceBytes / eb
	p.ext = g.ExtendedL2
	p.shift = uint(bits.TrailingZeros64(per))
	p.nslices = int(g.l2Entries() / per)
	p.sliceWords = int(sliceBytes / 8)
	p.zero = make([]uint64, p.sliceWords)
}

// table returns an empty table: no slice loaded, nothing dirty.
func (p *l2Pool) table() *l2Table {
	if n := len(p.tables); n > 0 {
		t := p.tables[n-1]
		p.tables = p.tables[:n-1]
		return t
	}
	return &l2Table{ext: p.ext, shift: p.shift, pool: p, sl: make([][]uint64, p.nslices), dirty: make([]uint64, (p.nslices+63)/64)}
}

// put takes back an evicted table: its slices' memory and the table itself.
func (p *l2Pool) put(t *l2Table) {
	for k := range t.sl {
		t.setSlice(k, nil)
	}
	t.bad, t.syncGen = nil, 0
	t.clearDirty()
	if len(p.tables) < maxL2FreeTables {
		p.tables = append(p.tables, t)
	}
}

// slice returns the memory for one slice, zeroed when zero is set.
func (p *l2Pool) slice(zero bool) []uint64 {
	if n := len(p.free); n > 0 {
		s := p.free[n-1]
		p.free = p.free[:n-1]
		if zero {
			clear(s)
		}
		return s
	}
	return make([]uint64, p.sliceWords)
}

func (p *l2Pool) putSlice(s []uint64) {
	if len(p.free) < maxL2FreeSlices {
		p.free = append(p.free, s)
	}
}

func (p *l2Pool) scratch(n uint64) []byte {
	if uint64(len(p.buf)) < n {
		p.buf = make([]byte, n)
	}
	return p.buf[:n]
}

// weight is what a cached table counts against the L2 cache's capacity (in slices): the
// slices it owns memory for, at least one.
func (t *l2Table) weight() int { return max(1, t.owned) }
