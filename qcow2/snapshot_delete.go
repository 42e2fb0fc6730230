// Deleting an internal snapshot (QEMU's qcow2_snapshot_delete): the entry removed from the
// table first, then the references of its L1 table dropped, then the COPIED flags fixed.
package qcow2

import "fmt"

// DeleteSnapshot deletes the snapshot whose ID and name match (an empty one matches any;
// QEMU's find_snapshot_by_id_and_name): the table without it is written copy-then-switch,
// then every cluster its L1 table reaches loses a reference (freed at zero), its L1 table is
// freed, and the active entries get COPIED back where their refcount is 1 again. A crash
// after the switch leaks at worst (docs/snapshots.md).
func (img *Image) DeleteSnapshot(id, name string) error {
	img.gate.Lock()
	defer img.gate.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.snapshotOpErr(); err != nil {
		return err
	}
	k := -1
	for i, sn := range img.snapshots {
		if (id == "" || sn.ID == id) && (name == "" || sn.Name == name) {
			k = i
			break
		}
	}
	if k < 0 {
		return fmt.Errorf("%w: no snapshot with ID %q and name %q", ErrSnapshotNotFound, id, name)
	}
	sn := img.snapshots[k]
	if err := checkSnapshotL1(&img.hdr, sn); err != nil {
		return err
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	l1, err := loadL1(img.file, sn.L1Offset, sn.L1Size)
	if err != nil {
		return err
	}
	list := append(append([]Snapshot(nil), img.snapshots[:k]...), img.snapshots[k+1:]...)
	if err := img.writeSnapshotTable(list); err != nil {
		return err
	}
	if err := img.addRefs(l1.entries, refDrop); err != nil {
		return err
	}
	g := img.geo
	if n := g.clustersFor(uint64(sn.L1Size) * l1EntrySize); n > 0 {
		img.alloc.free(sn.L1Offset.cluster(g), n, true)
	}
	if err := img.alloc.flush(); err != nil {
		return err
	}
	if err := img.fixCopied(); err != nil {
		return err
	}
	img.stateChanged()
	return nil
}
