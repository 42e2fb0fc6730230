// Shrinking the refcount structures after a resize freed the image's tail: refcount blocks
// that count nothing any more leave the reftable (QEMU's qcow2_shrink_reftable).
package qcow2

import "fmt"

// dropEmptyRefBlocks removes from the reftable every refcount block whose counts are all 0 but
// possibly its own (a block that describes itself), then frees those blocks' clusters. The
// reftable entries reach the disk (synced) before the clusters' counts drop, so a crash in
// between leaks them at worst. Called with mu held.
func (a *allocator) dropEmptyRefBlocks() error {
	g := a.g
	if err := a.flush(); err != nil {
		return err
	}
	type emptyBlock struct {
		i    refTableIndex
		c    hostCluster
		self bool // the block counts itself
	}
	var empty []emptyBlock
	for k := range a.table {
		i := refTableIndex(k)
		rb, c, ok, err := a.refblockFor(i)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		v := a.view(rb)
		self := c.refTableIndex(g) == i
		var own refcount
		if self {
			own = v.Get(c.refBlockIndex(g))
			v.Set(c.refBlockIndex(g), 0)
		}
		unused := allZero(rb.data)
		if self {
			v.Set(c.refBlockIndex(g), own)
		}
		if unused {
			empty = append(empty, emptyBlock{i: i, c: c, self: self})
		}
	}
	if len(empty) == 0 {
		return nil
	}
	for _, e := range empty {
		a.setTableEntry(e.i, 0)
	}
	if _, err := a.writeRefTableDirty(); err != nil {
		return err
	}
	if err := a.img.file.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync refcount table: %w", err)
	}
	for _, e := range empty {
		a.cache.drop(e.c)
		if e.self {
			// Its count went with it.
			a.firstFree = min(a.firstFree, e.c)
			a.img.punchHost(a.img.file, e.c.Offset(g), g.ClusterSize())
			continue
		}
		a.free(e.c, 1, true)
	}
	return a.flush()
}

func allZero(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}
