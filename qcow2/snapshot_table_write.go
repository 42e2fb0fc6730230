// Writing the snapshot table of an open image: the new table to new clusters, the header
// switched to it, the old table freed (copy-then-switch, docs/snapshots.md).
package qcow2

import (
	"encoding/binary"
	"fmt"
)

// snapshotDate returns the stored date fields of sn (seconds, nanoseconds) as they are on
// disk, so that a rewrite of the table keeps them bit for bit.
func (img *Image) snapshotDate(sn Snapshot) ([8]byte, error) {
	var d [8]byte
	if sn.EntryOffset == 0 {
		// A new entry: its date is the Snapshot's.
		binary.BigEndian.PutUint32(d[0:], uint32(sn.Date.Unix()))
		binary.BigEndian.PutUint32(d[4:], uint32(sn.Date.Nanosecond()))
		return d, nil
	}
	size, err := img.file.Size()
	if err != nil {
		return d, fmt.Errorf("qcow2: size of image file: %w", err)
	}
	if err := readAtZero(img.file, d[:], uint64(sn.EntryOffset)+16, uint64(size)); err != nil {
		return d, fmt.Errorf("qcow2: read snapshot table: %w", err)
	}
	return d, nil
}

// writeSnapshotTable replaces the snapshot table by snaps, as qcow2_write_snapshots does:
// the entries are encoded, written to newly allocated clusters and synced; one header
// write (count and offset, in the same sector) switches to them; then the old table's
// clusters are freed. A crash before the switch leaks the new clusters, after it the old
// ones. With mu held and the gate held exclusively.
func (img *Image) writeSnapshotTable(snaps []Snapshot) error {
	g := img.geo
	dates := make([][8]byte, len(snaps))
	for i, sn := range snaps {
		d, err := img.snapshotDate(sn)
		if err != nil {
			return err
		}
		dates[i] = d
	}
	tbl, err := encodeSnapshotTable(snaps, dates)
	if err != nil {
		return err
	}
	var at HostOffset
	var first hostCluster
	n := g.clustersFor(uint64(len(tbl)))
	if n > 0 {
		if first, err = img.alloc.allocMeta(n, AllocL1); err != nil {
			return err
		}
		at = first.Offset(g)
		if err := img.checkMetadataWrite(at, uint64(len(tbl)), metaSnapTable, 0); err != nil {
			return err
		}
		if _, err := img.file.WriteAt(tbl, int64(at)); err != nil {
			img.alloc.free(first, n, false)
			return fmt.Errorf("qcow2: write snapshot table at %#x: %w", uint64(at), err)
		}
		if err := img.alloc.flush(); err != nil {
			return err
		}
		if err := img.file.Sync(); err != nil {
			return fmt.Errorf("qcow2: sync the new snapshot table: %w", err)
		}
	}
	oldOff, oldLen := img.hdr.SnapshotsOffset, img.snapTableLen
	hdr := img.hdr
	hdr.SnapshotCount = uint32(len(snaps))
	hdr.SnapshotsOffset = at
	if err := img.writeHeaderSync(&hdr); err != nil {
		img.broken = fmt.Errorf("switching to the new snapshot table failed: %w", err)
		return err
	}
	img.hdr = hdr
	if err := img.reloadSnapshots(); err != nil {
		return err
	}
	if oldLen > 0 {
		lo, hi := oldOff.cluster(g), oldOff.Add(oldLen-1).cluster(g)
		img.alloc.free(lo, ClusterCount(hi-lo+1), true)
	}
	return img.alloc.flush()
}

// reloadSnapshots reads the snapshot table the header names into the image's view of it
// (entries, their L1 tables for overlap checks, the table's extent).
func (img *Image) reloadSnapshots() error {
	snaps, err := LoadSnapshots(img.file, &img.hdr)
	if err != nil {
		return err
	}
	img.snapshots = snaps
	img.snapL1Bad = make([]bool, len(snaps))
	for i, sn := range snaps {
		img.snapL1Bad[i] = checkSnapshotL1(&img.hdr, sn) != nil
	}
	img.snapTableLen = snapshotTableSize(&img.hdr, snaps)
	return nil
}
