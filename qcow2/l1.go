// The active L1 table: loading, entry validation on use, dirty-entry write-back, growth.
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// l1Table is an L1 table held entirely in memory (at most MaxL1Bytes, checked by
// Header.Validate before anything is allocated). Entries are changed in memory and written
// back by flush, after the L2 tables they point at (see flush.go).
type l1Table struct {
	off     HostOffset
	entries []l1Entry
	dirty   map[l1Index]struct{}
	// tables counts the clusters of the L2 tables the entries name, for overlap checks
	// (overlap.go activeL2); nil until first needed, then kept in step by set.
	tables *clusterRefs
}

// loadL1 reads n entries at off. The caller has bounded n (Validate for the active table,
// the snapshot checks for a snapshot's).
func loadL1(s Storage, off HostOffset, n uint32) (*l1Table, error) {
	buf := make([]byte, uint64(n)*l1EntrySize)
	if err := readAtFull(s, buf, off); err != nil {
		return nil, fmt.Errorf("qcow2: read L1 table at %#x: %w", uint64(off), err)
	}
	t := &l1Table{off: off, entries: make([]l1Entry, n), dirty: map[l1Index]struct{}{}}
	for i := range t.entries {
		t.entries[i] = l1Entry(binary.BigEndian.Uint64(buf[i*8:]))
	}
	return t, nil
}

// bytes is the table's size in bytes.
func (t *l1Table) bytes() uint64 { return uint64(len(t.entries)) * l1EntrySize }

func (t *l1Table) set(i l1Index, e l1Entry) {
	if t.tables != nil {
		t.tables.remove(t.entries[i].l2Offset())
		t.tables.add(e.l2Offset())
	}
	t.entries[i] = e
	t.dirty[i] = struct{}{}
}

// l2For validates the L1 entry for index i and returns the host cluster of its L2 table, or
// false when none is allocated. An entry with reserved bits, an unaligned offset, or one
// pointing outside the file or at the header is corruption.
func (img *Image) l2For(i l1Index) (hostCluster, bool, error) {
	if uint64(i) >= uint64(len(img.l1.entries)) {
		return 0, false, nil
	}
	e := img.l1.entries[i]
	off := e.l2Offset()
	if e.reserved() != 0 {
		return 0, false, corruptf("L1 index %d (entry %#016x): reserved bits set", i, uint64(e))
	}
	if off == 0 {
		return 0, false, nil
	}
	c, ok := off.checkedCluster(img.geo)
	if !ok {
		return 0, false, corruptf("L1 index %d: L2 table offset %#x not aligned to a cluster", i, uint64(off))
	}
	if uint64(off)+img.geo.ClusterSize() > img.fileEnd() {
		return 0, false, corruptf("L1 index %d: L2 table at %#x lies past the end of the %d-byte file", i, uint64(off), img.fileEnd())
	}
	if what := img.overlapsFixed(off, img.geo.ClusterSize()); what != "" {
		return 0, false, corruptf("L1 index %d: L2 table at %#x overlaps the %s", i, uint64(off), what)
	}
	return c, true, nil
}

// writeL1Dirty writes the sectors of the L1 table that hold changed entries. The caller has
// made the L2 tables they point at durable first.
func (img *Image) writeL1Dirty() error {
	t := img.l1
	if len(t.dirty) == 0 {
		return nil
	}
	const perSector = 512 / l1EntrySize
	sectors := make([]uint64, 0, len(t.dirty))
	for i := range t.dirty {
		sectors = append(sectors, uint64(i)/perSector)
	}
	slices.Sort(sectors)
	sectors = slices.Compact(sectors)
	buf := make([]byte, 512)
	for _, s := range sectors {
		clear(buf)
		for j := uint64(0); j < perSector; j++ {
			if k := s*perSector + j; k < uint64(len(t.entries)) {
				binary.BigEndian.PutUint64(buf[j*8:], uint64(t.entries[k]))
			}
		}
		off := t.off.Add(s * 512)
		if err := img.checkMetadataWrite(off, 512, metaL1, 0); err != nil {
			return err
		}
		if _, err := img.file.WriteAt(buf, int64(off)); err != nil {
			return fmt.Errorf("qcow2: write L1 table at %#x: %w", uint64(off), err)
		}
	}
	clear(t.dirty)
	return nil
}

// writeL1Entry writes the sector holding entry i now and syncs (used when a shared L2 table
// was copied: the old table's refcount may only drop once the L1 points away from it).
func (img *Image) writeL1Entry(i l1Index) error {
	img.l1.dirty[i] = struct{}{}
	if err := img.writeL1Dirty(); err != nil {
		return err
	}
	return img.file.Sync()
}

// encodeL1 returns the whole table, padded with zeros to n clusters.
func (t *l1Table) encode(g Geometry, entries uint64) []byte {
	b := make([]byte, g.Bytes(g.clustersFor(entries*l1EntrySize)))
	for i, e := range t.entries {
		if uint64(i) >= entries {
			break
		}
		binary.BigEndian.PutUint64(b[i*8:], uint64(e))
	}
	return b
}

// growL1 moves the active L1 table to a copy of exactly n entries, as QEMU's resize does
// (qcow2_grow_l1_table with exact_size): copy, then one header update as the switch, then
// free the old table (QEMU's alloc_table / write_table / activate_table sequence). Every L2
// table the L1 points at is made durable first, so the new table never points at an unwritten
// one.
func (img *Image) growL1(n uint64) error {
	old := img.l1
	if n <= uint64(len(old.entries)) {
		return nil
	}
	if n*l1EntrySize > MaxL1Bytes {
		return fmt.Errorf("%w: an L1 table of %d entries exceeds the %d-byte limit", ErrNoSpace, n, MaxL1Bytes)
	}
	want := n
	g := img.geo
	clusters := g.clustersFor(want * l1EntrySize)
	if err := img.flushL2(); err != nil {
		return err
	}
	c, err := img.alloc.allocMeta(clusters, AllocL1)
	if err != nil {
		return err
	}
	newT := &l1Table{off: c.Offset(g), entries: make([]l1Entry, want), dirty: map[l1Index]struct{}{}}
	copy(newT.entries, old.entries)
	buf := newT.encode(g, want)
	if err := img.checkMetadataWrite(newT.off, uint64(len(buf)), metaL1, 0); err != nil {
		return err
	}
	if _, err := img.file.WriteAt(buf, int64(newT.off)); err != nil {
		img.alloc.free(c, clusters, false)
		return fmt.Errorf("qcow2: write new L1 table: %w", err)
	}
	// Refcounts for the new table, then the table itself, must be durable before the header
	// points at it (the refcount flush syncs only when it wrote something).
	if err := img.alloc.flush(); err != nil {
		img.alloc.free(c, clusters, false)
		return err
	}
	if err := img.file.Sync(); err != nil {
		img.alloc.free(c, clusters, false)
		return err
	}
	hdr := img.hdr
	hdr.L1TableOffset = newT.off
	hdr.L1Size = uint32(want)
	if err := img.writeHeaderSync(&hdr); err != nil {
		var unwritten *headerWriteError
		if errors.As(err, &unwritten) {
			// The file still points at the old table: undo (a transient error leaks nothing).
			img.alloc.free(c, clusters, false)
			return err
		}
		// The header on disk may or may not point at the new table now: keep both tables
		// allocated, and make no further change until the image is reopened.
		img.broken = fmt.Errorf("switching to the new L1 table failed: %w", err)
		return err
	}
	img.hdr = hdr
	img.l1 = newT
	if old.off != 0 && len(old.entries) > 0 {
		img.alloc.free(old.off.cluster(g), g.clustersFor(old.bytes()), false)
	}
	img.stateChanged()
	return nil
}

// readAtFull reads len(p) bytes at off; the part past the end of the store reads as zeros, as
// QEMU's protocol drivers do.
func readAtFull(s Storage, p []byte, off HostOffset) error {
	n, err := s.ReadAt(p, int64(off))
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	clear(p[n:])
	return nil
}
