// Refcounts: the reftable in memory, refcount blocks through their cache, reading and updating counts.
package qcow2

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// refBlock is one refcount block in memory (raw bytes; RefBlock gives typed access), bound to
// the reftable index it serves once refblockFor (or the code creating it) has seen it: the
// reservation translates its reserved clusters on the way in and out (alloc_reserve.go).
type refBlock struct {
	data  []byte
	idx   refTableIndex
	bound bool
}

func (a *allocator) view(rb *refBlock) RefBlock {
	return RefBlock{Data: rb.data, Order: a.g.RefcountOrder}
}

// refBlockBackend loads and writes refcount blocks of an image.
type refBlockBackend struct{ img *Image }

func (b refBlockBackend) load(k hostCluster) (*refBlock, error) {
	off := k.Offset(b.img.geo)
	rb := &refBlock{data: make([]byte, b.img.geo.ClusterSize())}
	if err := readAtFull(b.img.file, rb.data, off); err != nil {
		return nil, fmt.Errorf("qcow2: read refcount block at %#x: %w", uint64(off), err)
	}
	return rb, nil
}

func (b refBlockBackend) flush(k hostCluster, rb *refBlock) error {
	off := k.Offset(b.img.geo)
	if err := b.img.checkMetadataWrite(off, b.img.geo.ClusterSize(), metaRefBlock, k); err != nil {
		return err
	}
	data := rb.data
	if b.img.alloc != nil {
		data = b.img.alloc.encodeReserved(rb)
	}
	if _, err := b.img.file.WriteAt(data, int64(off)); err != nil {
		return fmt.Errorf("qcow2: write refcount block at %#x: %w", uint64(off), err)
	}
	return nil
}

// loadRefTable reads the reftable the header points at. Its size was bounded by Validate
// (at most maxRefTableBytes).
func loadRefTable(s Storage, h *Header) ([]refTableEntry, error) {
	buf := make([]byte, uint64(h.RefTableClusters)*h.ClusterSize())
	if err := readAtFull(s, buf, h.RefTableOffset); err != nil {
		return nil, fmt.Errorf("qcow2: read refcount table at %#x: %w", uint64(h.RefTableOffset), err)
	}
	t := make([]refTableEntry, len(buf)/reftableEntrySize)
	for i := range t {
		t[i] = refTableEntry(binary.BigEndian.Uint64(buf[i*8:]))
	}
	return t, nil
}

// refblockFor returns the refcount block at reftable index i, or false when there is none
// (all refcounts it would hold are 0). A reftable entry with reserved bits, an unaligned
// offset, or one pointing outside the file or at fixed metadata is corruption.
func (a *allocator) refblockFor(i refTableIndex) (*refBlock, hostCluster, bool, error) {
	if uint64(i) >= uint64(len(a.table)) {
		return nil, 0, false, nil
	}
	e := a.table[i]
	if e.reserved() != 0 {
		return nil, 0, false, corruptf("reftable index %d (entry %#016x): reserved bits set", i, uint64(e))
	}
	off := e.Offset()
	if off == 0 {
		return nil, 0, false, nil
	}
	c, ok := off.checkedCluster(a.g)
	if !ok {
		return nil, 0, false, corruptf("reftable index %d: refcount block offset %#x not aligned to a cluster", i, uint64(off))
	}
	if !a.cache.contains(c) {
		if uint64(off)+a.g.ClusterSize() > a.img.fileEnd() {
			return nil, 0, false, corruptf("reftable index %d: refcount block at %#x lies past the end of the file", i, uint64(off))
		}
		if what := a.img.overlapsFixed(off, a.g.ClusterSize()); what != "" {
			return nil, 0, false, corruptf("reftable index %d: refcount block at %#x overlaps the %s", i, uint64(off), what)
		}
		if a.img.activeL2(c) {
			// Its "refcounts" would be L2 entries, and writing them back would destroy the
			// table (QEMU refuses that write: overlaps with active L2 table).
			return nil, 0, false, corruptf("reftable index %d: refcount block at %#x is an active L2 table", i, uint64(off))
		}
	}
	rb, err := a.cache.get(c)
	if err != nil {
		return nil, 0, false, err
	}
	if !rb.bound {
		a.decodeReserved(rb, i)
	}
	return rb, c, true, nil
}

// refcount returns the refcount of host cluster c.
func (a *allocator) refcount(c hostCluster) (refcount, error) {
	rb, _, ok, err := a.refblockFor(c.refTableIndex(a.g))
	if err != nil || !ok {
		return 0, err
	}
	return a.view(rb).Get(c.refBlockIndex(a.g)), nil
}

// setRefcount stores v as the refcount of c, whose refcount block must exist.
func (a *allocator) setRefcount(c hostCluster, v refcount) error {
	rb, key, ok, err := a.refblockFor(c.refTableIndex(a.g))
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("qcow2: internal error: no refcount block for cluster %d", c)
	}
	if v > a.g.maxRefcount() {
		return fmt.Errorf("qcow2: refcount of cluster %d would overflow %d bits", c, a.g.RefcountBits())
	}
	a.view(rb).Set(c.refBlockIndex(a.g), v)
	a.cache.markDirty(key)
	return nil
}

// setTableEntry changes reftable entry i in memory (written back by writeRefTableDirty).
func (a *allocator) setTableEntry(i refTableIndex, e refTableEntry) {
	if a.blocks != nil {
		a.blocks.remove(a.table[i].Offset())
		a.blocks.add(e.Offset())
	}
	a.table[i] = e
	a.tableDirty[i] = struct{}{}
}

// writeRefTableDirty writes the reftable sectors holding entries changed in memory. It runs as
// the refcount cache's afterWrite step: the refcount blocks those entries point at are already
// written and synced.
func (a *allocator) writeRefTableDirty() (bool, error) {
	if len(a.tableDirty) == 0 {
		return false, nil
	}
	const perSector = 512 / reftableEntrySize
	sectors := make([]uint64, 0, len(a.tableDirty))
	for i := range a.tableDirty {
		sectors = append(sectors, uint64(i)/perSector)
	}
	slices.Sort(sectors)
	sectors = slices.Compact(sectors)
	buf := make([]byte, 512)
	for _, s := range sectors {
		for j := uint64(0); j < perSector; j++ {
			binary.BigEndian.PutUint64(buf[j*8:], uint64(a.table[s*perSector+j]))
		}
		off := a.tableOff.Add(s * 512)
		if err := a.img.checkMetadataWrite(off, 512, metaRefTable, 0); err != nil {
			return true, err
		}
		if _, err := a.img.file.WriteAt(buf, int64(off)); err != nil {
			return true, fmt.Errorf("qcow2: write refcount table at %#x: %w", uint64(off), err)
		}
	}
	clear(a.tableDirty)
	return true, nil
}

// flush makes every refcount change durable: dirty refcount blocks, sync, dirty reftable
// entries, sync (after whatever the refcount cache depends on).
func (a *allocator) flush() error { return a.cache.flushAll() }
