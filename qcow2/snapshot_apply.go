// Reverting to an internal snapshot (QEMU's qcow2_snapshot_goto): the active L1 table
// replaced by a copy of the snapshot's, copy-then-switch, with the refcounts adjusted.
package qcow2

import (
	"errors"
	"fmt"
)

// findSnapshotIDOrName is QEMU's find_snapshot_by_id_or_name: an ID match first, then a name
// match (the first one in table order).
func findSnapshotIDOrName(snaps []Snapshot, s string) (Snapshot, bool) {
	for _, sn := range snaps {
		if sn.ID == s {
			return sn, true
		}
	}
	for _, sn := range snaps {
		if sn.Name == s {
			return sn, true
		}
	}
	return Snapshot{}, false
}

// ApplySnapshot reverts the active state to the snapshot with ID or name idOrName. The image
// is first resized to the snapshot's disk size when that differs (as QEMU truncates), and the
// active L1 table grown to the snapshot's. Then, each step durable before the next
// (docs/snapshots.md): every cluster the snapshot's L1 table reaches gets one more reference;
// a new active L1 table, a copy of the snapshot's, is written and the header switched to it;
// the old active table's references are dropped (freeing what reaches zero) and its clusters
// freed; the COPIED flags are set from the refcounts. A crash leaks at worst, and the guest
// sees either the old state or the snapshot's, never a mix.
func (img *Image) ApplySnapshot(idOrName string) error {
	img.mu.Lock()
	sn, ok := findSnapshotIDOrName(img.snapshots, idOrName)
	err := img.snapshotOpErr()
	if err == nil && img.hasBitmaps() {
		err = ErrActiveBitmaps
	}
	img.mu.Unlock()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: no snapshot has the ID or name %q", ErrSnapshotNotFound, idOrName)
	}
	if err := checkSnapshotL1(&img.hdr, sn); err != nil {
		return err
	}
	if sn.DiskSize != img.Size() {
		if err := img.Resize(sn.DiskSize); err != nil {
			return err
		}
	}
	img.gate.Lock()
	defer img.gate.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.flushLocked(); err != nil {
		return err
	}
	if err := img.growL1(uint64(sn.L1Size)); err != nil {
		return err
	}
	snL1, err := loadL1(img.file, sn.L1Offset, sn.L1Size)
	if err != nil {
		return err
	}
	g := img.geo
	old := img.l1
	entries := make([]l1Entry, len(old.entries))
	for i, e := range snL1.entries {
		entries[i] = e &^ l1Entry(entryCopied)
	}
	// 1. The snapshot's clusters get the active table's reference.
	if err := img.addRefs(entries, refRaise); err != nil {
		return err
	}
	if err := img.alloc.flush(); err != nil {
		return err
	}
	// 2. The new active table, then the switch.
	n := g.clustersFor(uint64(len(entries)) * l1EntrySize)
	newT := &l1Table{entries: entries, dirty: map[l1Index]struct{}{}}
	if n > 0 {
		c, err := img.alloc.allocMeta(n, AllocL1)
		if err != nil {
			return err
		}
		newT.off = c.Offset(g)
		buf := newT.encode(g, uint64(len(entries)))
		if err := img.checkMetadataWrite(newT.off, uint64(len(buf)), metaL1, 0); err != nil {
			return err
		}
		if _, err := img.file.WriteAt(buf, int64(newT.off)); err != nil {
			return fmt.Errorf("qcow2: write L1 table: %w", err)
		}
		if err := img.alloc.flush(); err != nil {
			return err
		}
		if err := img.file.Sync(); err != nil {
			return fmt.Errorf("qcow2: sync L1 table: %w", err)
		}
	}
	hdr := img.hdr
	hdr.L1TableOffset = newT.off
	if err := img.writeHeaderSync(&hdr); err != nil {
		var unwritten *headerWriteError
		if !errors.As(err, &unwritten) {
			img.broken = fmt.Errorf("switching to the snapshot's L1 table failed: %w", err)
		}
		return err
	}
	img.hdr = hdr
	img.l1 = newT
	// 3. The old active state loses its references.
	if err := img.addRefs(old.entries, refDrop); err != nil {
		return err
	}
	if k := g.clustersFor(old.bytes()); k > 0 && old.off != 0 {
		img.alloc.free(old.off.cluster(g), k, false)
	}
	if err := img.alloc.flush(); err != nil {
		return err
	}
	// 4. COPIED where the active state owns a cluster alone.
	if err := img.fixCopied(); err != nil {
		return err
	}
	img.stateChanged()
	return nil
}
