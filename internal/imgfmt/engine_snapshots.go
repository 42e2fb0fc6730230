// The engine's snapshot API (list, create, apply, delete) for qemu-img snapshot, converted to
// this package's terms; like engine.go, the only place naming it.
package imgfmt

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/qnbd/qnbd/qcow2"
)

// ErrNoSnapshots is what a format without internal snapshots (raw) answers to a snapshot
// operation: QEMU's -ENOTSUP, worded as bdrv_snapshot_goto words it.
var ErrNoSnapshots = fmt.Errorf("%w: %w", QemuError("Block driver does not support snapshots"), syscall.ENOTSUP)

// ErrSnapshotNotFound is returned for a snapshot no ID or name matches.
var ErrSnapshotNotFound = qcow2.ErrSnapshotNotFound

// ErrActiveBitmaps refuses to apply a snapshot to an image with persistent dirty bitmaps.
var ErrActiveBitmaps = qcow2.ErrActiveBitmaps

func snapshotImage(d Disk) (*qcow2.Image, bool) {
	q, ok := d.(*qcow2Disk)
	if !ok {
		return nil, false
	}
	img, ok := q.img.(*qcow2.Image)
	return img, ok
}

// ListSnapshots returns the internal snapshots of d (none for raw).
func ListSnapshots(d Disk) []Snapshot {
	img, ok := snapshotImage(d)
	if !ok {
		return nil
	}
	var out []Snapshot
	for _, sn := range img.Snapshots() {
		out = append(out, Snapshot{ID: sn.ID, Name: sn.Name, VMStateSize: sn.VMStateSize, Date: sn.Date,
			VMClock: sn.VMClock, ICount: uint64(sn.ICount), HasICount: sn.ICount != -1})
	}
	return out
}

// CreateSnapshot takes an internal snapshot named name, dated date, with the next free ID
// (qemu-img snapshot -c). Raw: ENOTSUP.
func CreateSnapshot(d Disk, name string, date time.Time) error {
	img, ok := snapshotImage(d)
	if !ok {
		return syscall.ENOTSUP
	}
	_, err := img.CreateSnapshot(qcow2.SnapshotSpec{Name: name, Date: date})
	return err
}

// ApplySnapshot reverts d to the snapshot with ID or name idOrName (qemu-img snapshot -a).
func ApplySnapshot(d Disk, idOrName string) error {
	img, ok := snapshotImage(d)
	if !ok {
		return ErrNoSnapshots
	}
	return img.ApplySnapshot(idOrName)
}

// DeleteSnapshot deletes the snapshot with ID or name idOrName, an ID match first (qemu-img
// snapshot -d: bdrv_snapshot_find, then a delete by that snapshot's ID and name).
func DeleteSnapshot(d Disk, idOrName string) error {
	img, ok := snapshotImage(d)
	if !ok {
		return ErrSnapshotNotFound
	}
	snaps := img.Snapshots()
	for _, match := range []func(qcow2.Snapshot) bool{
		func(sn qcow2.Snapshot) bool { return sn.ID == idOrName },
		func(sn qcow2.Snapshot) bool { return sn.Name == idOrName },
	} {
		for _, sn := range snaps {
			if match(sn) {
				return img.DeleteSnapshot(sn.ID, sn.Name)
			}
		}
	}
	return ErrSnapshotNotFound
}

// IsSnapshotNotFound reports a snapshot that does not exist.
func IsSnapshotNotFound(err error) bool { return errors.Is(err, qcow2.ErrSnapshotNotFound) }
