// Reftable growth: copy the table to a larger one laid out past the covered area, then switch.
package qcow2

import (
	"errors"
	"fmt"
)

// growRefTable replaces the reftable with a larger copy that has an entry for index need.
//
// The new structures go into the first region the old table cannot describe (every cluster
// there has refcount 0, being uncounted), and describe themselves:
//
//	old coverage ends here
//	        v
//	 ...used|B0 B1 .. Br-1|T0 T1 .. Tt-1|      B = new refcount blocks, T = new reftable
//	        [ counted by B0 ][ by B1 ] ...      r blocks cover the r+t clusters they occupy
//
// Order (the header is the commit point; a crash anywhere before it leaves only uncounted,
// unreferenced clusters past the old coverage, which neither QEMU nor we count as leaks):
//  1. new blocks into the refcount cache; flush the cache (blocks, sync, pending entries of
//     the old table, sync);
//  2. write the new table, sync;
//  3. write the header pointer, sync;
//  4. switch in memory and free the old table's clusters.
func (a *allocator) growRefTable(need refTableIndex) (err error) {
	g := a.g
	old := uint64(len(a.table))
	perCluster := g.ClusterSize() / reftableEntrySize
	perBlock := g.refBlockEntries()
	base := refTableIndex(old).firstCluster(g)

	entries := max(uint64(need)+1, old+old/2, perCluster)
	var blocks, tclusters uint64
	for {
		entries = (entries + perCluster - 1) / perCluster * perCluster
		tclusters = uint64(g.clustersFor(entries * reftableEntrySize))
		blocks = 1
		for blocks*perBlock < blocks+tclusters {
			blocks++
		}
		lastIndex := uint64(base.Add(ClusterCount(blocks + tclusters - 1)).refTableIndex(g))
		if lastIndex < entries {
			break
		}
		entries = lastIndex + 1
	}
	if entries*reftableEntrySize > maxRefTableBytes {
		return fmt.Errorf("%w: the refcount table would need %d bytes, more than the %d-byte limit", ErrNoSpace, entries*reftableEntrySize, maxRefTableBytes)
	}
	if uint64(base)+blocks+tclusters > maxHostOffset>>g.ClusterBits {
		return fmt.Errorf("%w: the image file cannot grow past %d bytes", ErrNoSpace, uint64(maxHostOffset))
	}
	total := ClusterCount(blocks + tclusters)
	if what := a.img.overlapsAny(base.Offset(g), g.Bytes(total), metaNone, 0); what != "" {
		return a.img.markCorrupt(corruptf("allocator: uncounted clusters %d..%d overlap the %s", base, base.Add(total-1), what))
	}

	newTable := make([]refTableEntry, entries)
	copy(newTable, a.table)
	newBlocks := make([]*refBlock, blocks)
	for j := range newBlocks {
		newBlocks[j] = &refBlock{data: make([]byte, g.ClusterSize()), idx: refTableIndex(old + uint64(j)), bound: true}
		newTable[old+uint64(j)] = refTableEntry(base.Add(ClusterCount(j)).Offset(g))
	}
	for k := uint64(0); k < blocks+tclusters; k++ {
		a.view(newBlocks[k/perBlock]).Set(refBlockIndex(k%perBlock), 1)
	}
	for j, rb := range newBlocks {
		a.cache.insertNew(base.Add(ClusterCount(j)), rb)
	}
	defer func() {
		if err != nil {
			// The old table stays; the new blocks describe clusters it cannot see, and must
			// not linger in the cache, where they would look like live metadata.
			for j := range newBlocks {
				a.cache.drop(base.Add(ClusterCount(j)))
			}
		}
	}()
	tableAt := base.Add(ClusterCount(blocks))
	if end := base.Add(total).Offset(g); end > a.end {
		a.end = end
	}

	// 1. Refcount blocks (new and pending old ones) durable.
	if err := a.cache.flushAll(); err != nil {
		return err
	}
	// 2. The new table.
	buf := make([]byte, g.Bytes(ClusterCount(tclusters)))
	for i, e := range newTable {
		putU64(buf[i*8:], uint64(e))
	}
	off := tableAt.Offset(g)
	if err := a.img.checkMetadataWrite(off, uint64(len(buf)), metaRefTable, 0); err != nil {
		return err
	}
	if _, err := a.img.file.WriteAt(buf, int64(off)); err != nil {
		return fmt.Errorf("qcow2: write new refcount table: %w", err)
	}
	if err := a.img.file.Sync(); err != nil {
		return err
	}
	// 3. The switch.
	hdr := a.img.hdr
	hdr.RefTableOffset = off
	hdr.RefTableClusters = uint32(tclusters)
	if err := a.img.writeHeaderSync(&hdr); err != nil {
		var unwritten *headerWriteError
		if errors.As(err, &unwritten) {
			// The file still points at the old table, which stays in use; the new
			// structures lie past what it counts (a later growth writes them again).
			return err
		}
		// The header on disk may or may not point at the new table now: no further change
		// is safe until the image is reopened.
		a.img.broken = fmt.Errorf("switching to the new refcount table failed: %w", err)
		return err
	}
	a.img.hdr = hdr
	// 4. Forget and free the old table.
	oldOff, oldClusters := a.tableOff, a.tableClusters
	a.table, a.tableOff, a.tableClusters = newTable, off, uint32(tclusters)
	a.blocks = nil // rebuilt from the new table when next needed
	clear(a.tableDirty)
	a.free(oldOff.cluster(g), ClusterCount(oldClusters), false)
	a.img.hooks.ClustersAllocated(AllocRefBlock, blocks)
	a.img.hooks.ClustersAllocated(AllocRefTable, tclusters)
	a.img.hooks.RefTableGrown(tclusters)
	a.img.stateChanged()
	return nil
}
