// The progress of a refcount width change as QEMU reports it (docs/chains.md, "Progress"):
// qcow2_change_refcount_order walks the old reftable two or more times to allocate the new
// refcount blocks and reftable, then once more to write them, and reports every reftable
// entry of each walk. How many allocation walks it makes depends on where its allocator puts
// the new structures, so that allocator is replayed here on the old counts.
package qcow2

// refcountWalks replays QEMU's allocation walks over the old counts and returns how many
// walks qcow2_change_refcount_order makes in all (allocation walks plus the write walk), and
// false when the replay met a case it does not model (a new old-width refcount block that
// does not describe itself, or a reftable that would have to grow); the count is then 3,
// QEMU's usual number.
func refcountWalks(counts []refcount, present []bool, oldG, newG Geometry) (int, bool) {
	s := &qemuAllocSim{
		counts:  append([]refcount(nil), counts...),
		present: append([]bool(nil), present...),
		oldPer:  oldG.refBlockEntries(),
		cs:      oldG.ClusterSize(),
	}
	newPer := newG.refBlockEntries()
	clusters := uint64(len(present)) * s.oldPer
	blocks := (clusters + newPer - 1) / newPer
	var table []bool // new reftable entries: allocated or not
	tableSize := uint64(0)
	var tableAt, tableLen uint64
	walk := 0
	for range 64 {
		allocated := false
		for b := uint64(0); b < blocks; b++ {
			if s.empty(b*newPer, (b+1)*newPer) {
				continue
			}
			if b >= tableSize { // the new reftable grows for non-empty blocks only
				per := s.cs / reftableEntrySize
				tableSize = (b + 1 + per - 1) / per * per
				table = append(table, make([]bool, tableSize-uint64(len(table)))...)
			}
			if !table[b] {
				if _, ok := s.alloc(1); !ok {
					return 3, false
				}
				table[b] = true
				allocated = true
			}
		}
		walk++
		if !allocated {
			return walk + 1, true
		}
		if tableLen > 0 {
			s.free(tableAt, tableLen)
		}
		tableLen = (tableSize*reftableEntrySize + s.cs - 1) / s.cs
		at, ok := s.alloc(tableLen)
		if !ok {
			return 3, false
		}
		tableAt = at
	}
	return 3, false
}

// qemuAllocSim is QEMU's cluster allocator (alloc_clusters_noref, update_refcount,
// alloc_refcount_block) over a copy of the refcounts: first fit from a free-cluster index
// that starts at 0 when the image is opened and only moves back when a cluster is freed.
type qemuAllocSim struct {
	counts  []refcount
	present []bool // old reftable entries that name a refcount block
	oldPer  uint64 // clusters per old refcount block
	cs      uint64
	next    uint64 // QEMU's free_cluster_index
}

// count is what QEMU reads as cluster c's refcount: 0 where no refcount block covers it.
func (s *qemuAllocSim) count(c uint64) refcount {
	if i := c / s.oldPer; i >= uint64(len(s.present)) || !s.present[i] || c >= uint64(len(s.counts)) {
		return 0
	}
	return s.counts[c]
}

func (s *qemuAllocSim) set(c uint64, v refcount) {
	for uint64(len(s.counts)) <= c {
		s.counts = append(s.counts, 0)
	}
	s.counts[c] = v
}

// empty reports whether every cluster of [lo, hi) has refcount 0.
func (s *qemuAllocSim) empty(lo, hi uint64) bool {
	for c := lo; c < min(hi, uint64(len(s.counts))); c++ {
		if s.count(c) != 0 {
			return false
		}
	}
	return true
}

// allocNoref is alloc_clusters_noref: the first run of n free clusters from next.
func (s *qemuAllocSim) allocNoref(n uint64) uint64 {
	for {
		ok := true
		for i := uint64(0); i < n; i++ {
			c := s.next
			s.next++
			if s.count(c) != 0 {
				ok = false
				break
			}
		}
		if ok {
			return s.next - n
		}
	}
}

// alloc is qcow2_alloc_clusters: n clusters counted 1, the search restarted whenever
// counting them needed a new refcount block. false: a case not modelled.
func (s *qemuAllocSim) alloc(n uint64) (uint64, bool) {
	for range 1 << 10 {
		c := s.allocNoref(n)
		again, ok := s.raise(c, n)
		if !ok {
			return 0, false
		}
		if !again {
			return c, true
		}
	}
	return 0, false
}

// raise is update_refcount(+1) over [c, c+n): again when a refcount block had to be made
// first (the raises done before it are undone, as QEMU undoes them).
func (s *qemuAllocSim) raise(c, n uint64) (again, ok bool) {
	for k := c; k < c+n; k++ {
		i := k / s.oldPer
		if i >= uint64(len(s.present)) {
			return false, false // the reftable would grow
		}
		if !s.present[i] {
			nb := s.allocNoref(1)
			if nb/s.oldPer != i {
				return false, false // a block described by another block
			}
			s.present[i] = true
			s.set(nb, 1)
			s.free(c, k-c)
			return true, true
		}
		s.set(k, s.count(k)+1)
	}
	return false, true
}

// free is update_refcount(-1) over [c, c+n): a cluster reaching 0 below next moves it back.
func (s *qemuAllocSim) free(c, n uint64) {
	for k := c; k < c+n; k++ {
		v := s.count(k)
		if v == 0 {
			continue
		}
		s.set(k, v-1)
		if v == 1 && k < s.next {
			s.next = k
		}
	}
}

// reportRefcountWalks makes QEMU's status calls for walks [from, to) of a width change of
// walks walks in all over an old reftable of n entries: the allocation walk k counts as one
// of max(k+2, 3), the write walk as the last of walks. stop >= 0 ends the first walk at
// reftable entry stop, where QEMU finds a count too wide for the new width.
func reportRefcountWalks(status AmendStatus, n int64, from, to, walks int, stop int64) {
	if status == nil {
		return
	}
	for k := from; k < to; k++ {
		total := int64(max(k+2, 3))
		if k == walks-1 {
			total = int64(walks)
		}
		for r := int64(0); r < n; r++ {
			status(int64(k)*n+r, total*n)
			if r == stop {
				return
			}
		}
		status(int64(k+1)*n, total*n)
	}
}
