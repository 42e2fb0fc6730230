// Rebuilding the refcount structures from the counted references: a new reftable and new
// refcount blocks past the end of the file, switched in by one header write.
package qcow2

import (
	"encoding/binary"
	"fmt"
	"sort"
)

// rebuildAndRecount replaces the refcount structures with ones built from the references the
// check counted, then counts again against the new structures and frees what the old ones
// occupied (they are now leaks), as QEMU's rebuild path does. It returns the checker of the
// new structures, for the COPIED check, and the highest used cluster.
func (c *checker) rebuildAndRecount() (*checker, hostCluster, error) {
	old := c.res.counters()
	c.res.msg("Rebuilding refcount structure")
	if err := c.writeNewRefcounts(); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR rebuilding refcount structure: %v", err)
		return nil, 0, err
	}
	c.res.Corruptions, c.res.Leaks = 0, 0
	c.res.AllocatedClusters, c.res.FragmentedClusters, c.res.CompressedClusters = 0, 0, 0

	c2, err := newChecker(c.s, nil, RepairNone)
	if err != nil {
		c.res.CheckErrors++
		return nil, 0, err
	}
	c2.res = c.res
	c2.snaps, c2.snapTableSize = c.snaps, c.snapTableSize
	if err := c2.calculate(RepairNone); err != nil {
		return nil, 0, err
	}
	// Free the old structures. Leaks found here were made by the rebuild itself, so they are
	// not reported as fixed; any that could not be freed stay leaks.
	saved := c.res.counters()
	c.res.setCounters(checkCounters{})
	highest, err := c2.compare(RepairLeaks)
	if err != nil {
		return nil, 0, err
	}
	if c2.rebuild {
		c.res.msg("ERROR rebuilt refcount structure is still broken")
	}
	fresh := c.res.Leaks
	c.res.setCounters(saved)
	if c.res.Corruptions < old.corruptions {
		c.res.CorruptionsFixed += old.corruptions - c.res.Corruptions
	}
	if c.res.Leaks < old.leaks {
		c.res.LeaksFixed += old.leaks - c.res.Leaks
	}
	c.res.Leaks += fresh
	return c2, highest, nil
}

// writeNewRefcounts writes a reftable and refcount blocks that hold exactly the counted
// references, and points the header at them.
//
// The new structures go past the end of the file (and past any cluster a broken entry points
// at just beyond it), so nothing the old image consists of is overwritten: until the header
// switch the image is exactly as before, and after it the new structures are complete. The
// order is refcount blocks and reftable, fsync, header pointer (12 bytes in the first sector),
// fsync. The new blocks count themselves and the new reftable:
//
//	... old image ... | reftable (nRT clusters) | refblock | refblock | ...
//	                  ^ start = first cluster past the file and every counted reference
func (c *checker) writeNewRefcounts() error {
	g, cs := c.g, c.cs
	per := g.refBlockEntries()
	used := c.usedRefblocks()
	start := hostCluster(max(c.nb, c.refs.n))
	if c.pastEOFNear != 0 {
		// A broken entry points just past the end: keep the new structures off it.
		start = max(start, c.pastEOFNear+1)
	}
	var nRB, nRT uint64
	for {
		if uint64(start) >= maxHostOffset/cs {
			return fmt.Errorf("no room for new refcount structures below the largest host offset")
		}
		end := uint64(start) + nRB + nRT
		count, maxIdx := uint64(len(used)), uint64(used[len(used)-1])
		if end > uint64(start) {
			a, b := uint64(start)/per, (end-1)/per
			count += b - a + 1
			if uint64(used[len(used)-1]) == a {
				count-- // the block covering the file's end is already counted
			}
			maxIdx = max(maxIdx, b)
		}
		needRT := (maxIdx + 1) * reftableEntrySize
		needRT = (needRT + cs - 1) / cs
		if needRT*cs > maxRefTableBytes {
			return fmt.Errorf("a reftable of %d clusters would exceed the %d-byte limit", needRT, maxRefTableBytes)
		}
		if c.pastEOFFarFrom != 0 && start.Add(ClusterCount(count+needRT)) > c.pastEOFFarFrom {
			return fmt.Errorf("new refcount structures at cluster %d would overlap cluster %d, which a broken entry points at", start, c.pastEOFFarFrom)
		}
		if count == nRB && needRT == nRT {
			break
		}
		nRB, nRT = count, needRT
	}

	// Assign the blocks: the old indices, then those covering the new area.
	idx := append([]refTableIndex(nil), used...)
	if nRB > uint64(len(used)) {
		for i := uint64(start) / per; uint64(len(idx)) < nRB; i++ {
			if refTableIndex(i) != used[len(used)-1] {
				idx = append(idx, refTableIndex(i))
			}
		}
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	for k := start; k < start.Add(ClusterCount(nRT+nRB)); k++ {
		c.refs.set(k, 1)
	}
	table := make([]byte, nRT*cs)
	blockAt := start.Add(ClusterCount(nRT))
	// The blocks are contiguous: write them in batches of up to 1 MiB.
	batch := make([]byte, 0, max(cs, 1<<20))
	batchAt := blockAt.Offset(g)
	for i, ri := range idx {
		off := blockAt.Add(ClusterCount(i)).Offset(g)
		binary.BigEndian.PutUint64(table[uint64(ri)*reftableEntrySize:], uint64(off))
		batch = batch[:len(batch)+int(cs)]
		block := batch[len(batch)-int(cs):]
		clear(block)
		rb := RefBlock{Data: block, Order: g.RefcountOrder}
		first := ri.firstCluster(g)
		for j := uint64(0); j < per && uint64(first)+j < c.refs.n; j++ {
			if v := c.refs.get(first.Add(ClusterCount(j))); v != 0 {
				rb.Set(refBlockIndex(j), v)
			}
		}
		if len(batch)+int(cs) > cap(batch) || i == len(idx)-1 {
			if _, err := c.s.WriteAt(batch, int64(batchAt)); err != nil {
				return fmt.Errorf("write refcount blocks at %#x: %w", uint64(batchAt), err)
			}
			batchAt = batchAt.Add(uint64(len(batch)))
			batch = batch[:0]
		}
	}
	if _, err := c.s.WriteAt(table, int64(start.Offset(g))); err != nil {
		return fmt.Errorf("write reftable at %#x: %w", uint64(start.Offset(g)), err)
	}
	if err := c.s.Sync(); err != nil {
		return fmt.Errorf("sync new refcount structures: %w", err)
	}
	var ptr [12]byte
	binary.BigEndian.PutUint64(ptr[:], uint64(start.Offset(g)))
	binary.BigEndian.PutUint32(ptr[8:], uint32(nRT))
	if _, err := c.s.WriteAt(ptr[:], offRefcountTableOffset); err != nil {
		return fmt.Errorf("switch the header to the new reftable: %w", err)
	}
	if err := c.s.Sync(); err != nil {
		return fmt.Errorf("sync header after switching the reftable: %w", err)
	}
	c.h.RefTableOffset, c.h.RefTableClusters = start.Offset(g), uint32(nRT)
	return nil
}

// usedRefblocks lists, in order, the reftable indices whose clusters have counted references.
// The header cluster is always counted, so the list is never empty.
func (c *checker) usedRefblocks() []refTableIndex {
	per := c.g.refBlockEntries()
	var out []refTableIndex
	for base := uint64(0); base < c.refs.n; base += per {
		if c.refs.nonZeroIn(hostCluster(base), hostCluster(min(base+per, c.refs.n))) {
			out = append(out, hostCluster(base).refTableIndex(c.g))
		}
	}
	if len(out) == 0 {
		out = append(out, 0)
	}
	return out
}
