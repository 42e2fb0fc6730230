// Creating an internal snapshot (QEMU's qcow2_snapshot_create): the active L1 table copied,
// every cluster it reaches counted once more, the COPIED flags cleared, the entry appended.
package qcow2

import (
	"fmt"
	"strconv"
	"syscall"
	"time"
)

// SnapshotSpec is what the caller chooses of a new snapshot; the rest (ID, L1 table, disk
// size) comes from the image. qemu-img snapshot -c sets the name and the date, and leaves
// the VM fields 0.
type SnapshotSpec struct {
	// ID is the snapshot's ID; "" takes the next free number, as QEMU does.
	ID, Name string
	Date     time.Time
	VMClock  time.Duration
	ICount   int64
}

// errSnapshotExists is returned by CreateSnapshot for an ID already in use (QEMU: -EEXIST).
var errSnapshotExists = fmt.Errorf("qcow2: snapshot ID already exists: %w", syscall.EEXIST)

// nextSnapshotID is QEMU's find_new_snapshot_id: one more than the largest numeric ID (an
// ID that is not a number counts as 0).
func nextSnapshotID(snaps []Snapshot) string {
	var top uint64
	for _, sn := range snaps {
		if v, err := strconv.ParseUint(sn.ID, 10, 64); err == nil && v > top {
			top = v
		}
	}
	return strconv.FormatUint(top+1, 10)
}

// snapshotOpErr refuses the snapshot operations where QEMU does: read-only, a snapshot
// opened with -l, an external data file (-ENOTSUP). Called with mu held.
func (img *Image) snapshotOpErr() error {
	switch {
	case img.readOnly:
		return ErrReadOnly
	case img.data != img.file:
		return fmt.Errorf("%w: internal snapshots with an external data file (%w)", ErrUnsupported, syscall.ENOTSUP)
	}
	return img.prepareMetadataWrite()
}

// prepareMetadataWrite is prepareWrite for changes that leave the guest's data as it is
// (snapshot create and delete, the metadata switch of apply, which is refused with bitmaps):
// persistent bitmaps stay consistent, so they are not marked in-use as a guest write marks
// them (QEMU keeps them valid across these too). Unknown autoclear bits are cleared and the
// dirty bit of lazy refcounts set, as for any write.
func (img *Image) prepareMetadataWrite() error {
	switch {
	case img.prepared:
		return img.prepareWrite()
	case img.closed:
		return ErrClosed
	case img.corrupt != nil:
		return fmt.Errorf("%w (marked earlier: %v)", ErrCorrupt, img.corrupt)
	case img.broken != nil:
		return fmt.Errorf("qcow2: image refuses writes until reopened: %w", img.broken)
	}
	h := img.hdr
	h.Autoclear &= autoclearKnown
	if !h.bitmapsConsistent() {
		h.Autoclear &^= AutoclearBitmaps
	}
	if img.hdr.LazyRefcounts() {
		h.Incompatible |= incompatDirty
	}
	if h.Autoclear != img.hdr.Autoclear || h.Incompatible != img.hdr.Incompatible {
		if err := img.writeHeaderSync(&h); err != nil {
			return err
		}
		img.hdr = h
		img.stateChanged()
	}
	return nil
}

// CreateSnapshot takes an internal snapshot of the active state. Each step is durable before
// the next one starts (docs/snapshots.md): the L1 copy, the raised refcounts, the cleared
// COPIED flags, and last the snapshot table that makes the snapshot exist. A crash before the
// end leaves the image as it was, with leaked clusters at worst.
func (img *Image) CreateSnapshot(spec SnapshotSpec) (Snapshot, error) {
	img.gate.Lock()
	defer img.gate.Unlock()
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.snapshotOpErr(); err != nil {
		return Snapshot{}, err
	}
	if len(img.snapshots) >= maxSnapshots {
		return Snapshot{}, fmt.Errorf("qcow2: already %d snapshots: %w", maxSnapshots, syscall.EFBIG)
	}
	id := spec.ID
	if id == "" {
		id = nextSnapshotID(img.snapshots)
	}
	for _, sn := range img.snapshots {
		if sn.ID == id {
			return Snapshot{}, errSnapshotExists
		}
	}
	if err := img.flushLocked(); err != nil {
		return Snapshot{}, err
	}
	g := img.geo
	sn := Snapshot{
		ID: id, Name: spec.Name, Date: spec.Date, VMClock: spec.VMClock, ICount: spec.ICount,
		DiskSize: img.size.Load(), L1Size: uint32(len(img.l1.entries)),
	}
	// 1. The copy of the active L1 table, entries as they are (COPIED flags included, as
	// QEMU copies them).
	n := g.clustersFor(img.l1.bytes())
	if n > 0 {
		c, err := img.alloc.allocMeta(n, AllocL1)
		if err != nil {
			return Snapshot{}, err
		}
		sn.L1Offset = c.Offset(g)
		buf := img.l1.encode(g, uint64(len(img.l1.entries)))
		if err := img.checkMetadataWrite(sn.L1Offset, uint64(len(buf)), metaInactiveL1, 0); err != nil {
			return Snapshot{}, err
		}
		if _, err := img.file.WriteAt(buf, int64(sn.L1Offset)); err != nil {
			return Snapshot{}, fmt.Errorf("qcow2: write snapshot L1 table: %w", err)
		}
		if err := img.alloc.flush(); err != nil {
			return Snapshot{}, err
		}
		if err := img.file.Sync(); err != nil {
			return Snapshot{}, fmt.Errorf("qcow2: sync snapshot L1 table: %w", err)
		}
	}
	// 2. Every cluster the table reaches is counted once more, durably.
	if err := img.addRefs(img.l1.entries, refRaise); err != nil {
		return Snapshot{}, err
	}
	if err := img.alloc.flush(); err != nil {
		return Snapshot{}, err
	}
	// 3. Shared now: the active tables lose their COPIED flags, so writes copy first.
	if err := img.fixCopied(); err != nil {
		return Snapshot{}, err
	}
	// 4. The entry, appended: the snapshot exists from the header switch on.
	list := append(append([]Snapshot(nil), img.snapshots...), sn)
	if err := img.writeSnapshotTable(list); err != nil {
		return Snapshot{}, err
	}
	img.stateChanged()
	return img.snapshots[len(img.snapshots)-1], nil
}
