// Walking the L1 and L2 tables for Check: every file position and every distinct L2 table is
// read once, with a weight that says how many table references lead to it.
package qcow2

import (
	"encoding/binary"
	"sort"
)

// QEMU walks each L1 table in turn, and the L2 tables of each L1 entry in turn, so a table that
// is referenced n times is read and counted n times. Snapshots share most of their tables with
// the active one, and a broken image can make every entry point at the same table: QEMU's work
// then grows with the product of the table sizes. Check computes the same counts (each
// reference counted once per path that leads to it) with bounded work:
//
//   - the L1 tables' clusters and their entries are swept once over the file positions they
//     cover, each position carrying the number of tables that cover it (its weight);
//   - each distinct L2 table is walked once, its references counted with the summed weight of
//     the L1 entries that point at it, and the allocation statistics with the number of active
//     L1 entries that do.
//
// Findings are counted as often as QEMU counts them, but reported once.

// l1Ref is one L1 table to walk.
type l1Ref struct {
	off    HostOffset
	n      uint64 // entries
	active bool
}

// chkInterval is a half-open range [from, to) with weight w, a of them from the active table.
type chkInterval struct{ from, to, w, a uint64 }

// weightedSweep calls fn for every maximal run [from, to) over which the intervals covering it
// (and so their summed weights) do not change, skipping runs no interval covers.
func weightedSweep(iv []chkInterval, fn func(from, to, w, a uint64) error) error {
	type event struct {
		pos    uint64
		dw, da int64
	}
	evs := make([]event, 0, 2*len(iv))
	for _, x := range iv {
		if x.to > x.from && x.w > 0 {
			evs = append(evs, event{x.from, int64(x.w), int64(x.a)}, event{x.to, -int64(x.w), -int64(x.a)})
		}
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].pos < evs[j].pos })
	var w, a int64
	for k := range evs {
		w += evs[k].dw
		a += evs[k].da
		if k+1 < len(evs) && evs[k+1].pos > evs[k].pos && w > 0 {
			if err := fn(evs[k].pos, evs[k+1].pos, uint64(w), uint64(a)); err != nil {
				return err
			}
		}
	}
	return nil
}

// l2Use is how often an L2 table is referenced: by all L1 entries, and by active ones.
type l2Use struct{ w, a uint64 }

// maxMisalignedL2Walks bounds the walks of L2 tables at misaligned offsets: such tables can
// overlap each other, and walking all of them would cost time in proportion to the square of
// the file size. They are corruptions already; past the bound the check reports a check error.
const maxMisalignedL2Walks = 64

// walkTables counts the L1 tables, their entries, the L2 tables and their clusters.
func (c *checker) walkTables(tables []l1Ref, fix RepairMode) error {
	// The tables' own clusters, each counted once per table that covers it.
	var clusters, entries []chkInterval
	for _, t := range tables {
		if t.n == 0 {
			continue
		}
		size := t.n * l1EntrySize
		end := uint64(t.off) + size
		if end >= c.fileSize+c.cs {
			c.incW(t.off, size, 1) // reports the range past the end of the file
		} else {
			clusters = append(clusters, chkInterval{from: uint64(t.off.cluster(c.g)), to: uint64(HostOffset(end-1).cluster(c.g)) + 1, w: 1})
		}
		// Entries past the end of the file read as zero: only the part inside is swept.
		var a uint64
		if t.active {
			a = 1
		}
		entries = append(entries, chkInterval{from: uint64(t.off), to: min(end, pad8(c.fileSize)), w: 1, a: a})
	}
	_ = weightedSweep(clusters, func(from, to, w, _ uint64) error {
		for k := from; k < to; k++ {
			c.incCluster(hostCluster(k), w)
		}
		return nil
	})

	uses := map[HostOffset]*l2Use{}
	var order []HostOffset
	buf := make([]byte, 0, 64<<10)
	err := weightedSweep(entries, func(from, to, w, a uint64) error {
		for from < to {
			n := min(to-from, uint64(cap(buf)))
			b := buf[:n]
			if err := readAtZero(c.s, b, from, c.fileSize); err != nil {
				c.res.CheckErrors++
				c.res.msg("ERROR: I/O error in check_refcounts_l1: %v", err)
				return err
			}
			for i := 0; i+l1EntrySize <= len(b); i += l1EntrySize {
				e := l1Entry(binary.BigEndian.Uint64(b[i:]))
				if e == 0 {
					continue
				}
				if e.reserved() != 0 {
					c.corruptW(w, "ERROR found L1 entry with reserved bits set: %x", uint64(e))
				}
				l2 := e.l2Offset()
				c.incW(l2, c.cs, w)
				if l2.inCluster(c.g) != 0 {
					c.corruptW(w, "ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", uint64(l2))
				}
				if uint64(l2) >= c.fileSize {
					continue // an all-zero table: nothing to walk
				}
				u := uses[l2]
				if u == nil {
					u = &l2Use{}
					uses[l2] = u
					order = append(order, l2)
				}
				u.w += w
				u.a += a
			}
			from += n
		}
		return nil
	})
	if err != nil {
		return err
	}

	misaligned := 0
	for _, l2 := range order {
		if l2.inCluster(c.g) != 0 {
			if misaligned++; misaligned > maxMisalignedL2Walks {
				c.res.CheckErrors++
				c.res.msg("ERROR: more than %d misaligned L2 tables; the others were not checked", maxMisalignedL2Walks)
				break
			}
		}
		u := uses[l2]
		if err := c.walkL2(l2, u.w, u.a, fix); err != nil {
			return err
		}
	}
	return nil
}

// walkL2 counts the clusters one L2 table references, w times, and checks its entries. a is
// the number of active L1 entries pointing at it, which the allocation statistics count.
func (c *checker) walkL2(l2 HostOffset, w, a uint64, fix RepairMode) error {
	buf := c.l2buf
	if err := readAtZero(c.s, buf, uint64(l2), c.fileSize); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: I/O error in check_refcounts_l2: %v", err)
		return err
	}
	dataFile := c.h.HasDataFile()
	var nextContiguous HostOffset
	for i := uint64(0); i < c.l2EntriesInFile(l2); i++ {
		e, bm := c.l2Entry(buf, i)
		typ := c.clusterType(e)
		if typ != chkCompressed && e.reserved() != 0 {
			c.corruptW(w, "ERROR found l2 entry with reserved bits set: %x", uint64(e))
		}
		switch typ {
		case chkCompressed:
			coff, clen := e.compressedRange(c.g)
			if e.copied() {
				c.corruptW(w, "ERROR: coffset=%#x: copied flag must never be set for compressed clusters", uint64(coff))
			}
			if dataFile {
				c.corruptW(w, "ERROR compressed cluster %d with data file, entry=%#x", i, uint64(e))
				continue
			}
			if bm != 0 {
				c.corruptW(w, "ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=%#x", i, uint64(e))
				continue
			}
			c.incW(coff, clen, w)
			// Compressed clusters are fragmented by nature (QEMU counts them so).
			c.res.AllocatedClusters += a
			c.res.CompressedClusters += a
			c.res.FragmentedClusters += a
		case chkNormal, chkZeroAlloc:
			off := e.Offset()
			if bm.Allocated()&bm.zeroBits() != 0 {
				c.corruptW(w, "ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap", uint64(off))
			}
			if off.inCluster(c.g) != 0 {
				hasData := uint64(e)&l2Zero == 0
				if c.g.ExtendedL2 {
					hasData = bm.Allocated() != 0
				}
				if hasData {
					c.corruptW(w, "ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.", uint64(off))
				} else {
					c.corruptW(w, "%s offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", repairWord(fix == RepairAll), uint64(off))
					if fix == RepairAll && c.zeroEntry(l2, buf, i, w) {
						continue // the entry no longer references the cluster
					}
				}
			}
			if a > 0 {
				c.res.AllocatedClusters += a
				if nextContiguous != 0 && off != nextContiguous {
					c.res.FragmentedClusters += a
				}
				nextContiguous = off.Add(c.cs)
			}
			if !dataFile {
				c.incW(off, c.cs, w)
			}
		case chkUnallocated:
			if bm.Allocated() != 0 {
				c.corruptW(w, "ERROR: Unallocated cluster has non-zero subcluster allocation map")
			}
		}
	}
	return nil
}

func repairWord(repair bool) string {
	if repair {
		return "Repairing"
	}
	return "ERROR"
}

// zeroEntry turns entry i of the L2 table at l2 (whose bytes are in buf) into a plain zero
// cluster, which is how QEMU repairs a misaligned preallocated zero cluster, and writes the
// entry. It reports whether the repair was made; the w corruptions already counted for it then
// become one fixed corruption (QEMU fixes it on the first of the w walks; the others find it
// fixed).
func (c *checker) zeroEntry(l2 HostOffset, buf []byte, i, w uint64) bool {
	es := c.g.l2EntrySize()
	ent := buf[i*es : (i+1)*es]
	if c.g.ExtendedL2 {
		_, bm := c.l2Entry(buf, i)
		// Every subcluster that was allocated or zero becomes zero.
		zero := uint64(bm.Allocated()|bm.zeroBits()) << 32
		binary.BigEndian.PutUint64(ent, 0)
		binary.BigEndian.PutUint64(ent[8:], zero)
	} else {
		binary.BigEndian.PutUint64(ent, l2Zero)
	}
	at := l2.Add(i * es)
	if what := c.overlapsMetadata(at, es, true); what != "" {
		c.res.CheckErrors++
		c.res.msg("ERROR: Overlap check failed: L2 entry at %#x lies in the %s", uint64(at), what)
		return false
	}
	if _, err := c.s.WriteAt(ent, int64(at)); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: Failed to overwrite L2 table entry: %v", err)
		return false
	}
	if err := c.s.Sync(); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: Failed to overwrite L2 table entry: %v", err)
		return false
	}
	c.res.Corruptions -= int(min(w, uint64(c.res.Corruptions)))
	c.res.CorruptionsFixed++
	return true
}
