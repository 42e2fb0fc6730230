// The snapshot table as a RepairAll check reads it (qcow2_do_read_snapshots with repair on):
// extra data over the limit is cut, entries past the 64 MiB table limit are dropped.
package qcow2

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// repairedSnapshots is what readSnapshotsRepairing found.
type repairedSnapshots struct {
	snaps []Snapshot
	// size is the table's length from its start to the end of the last kept entry's name,
	// extra data counted as stored (not as cut).
	size uint64
	// extraDropped counts entries whose extra data was cut to maxSnapshotExtraData bytes;
	// reduced the entries dropped from the end.
	extraDropped, reduced int
}

// readSnapshotsRepairing reads the n-entry snapshot table at start as QEMU does in check -r
// all: like LoadSnapshots (bytes past the end of the file read as zeros), except that an
// entry's extra data over maxSnapshotExtraData bytes is cut to that size ("Discarding too much
// extra metadata"), and the entry that takes the table past maxSnapshotTableBytes is dropped
// with all after it ("Discarding N overhanging snapshots"). What it keeps in memory is bounded
// by the table limit. A read reaching past QEMU's largest offset fails with EIO.
func (c *checker) readSnapshotsRepairing(n uint32, start HostOffset) (*repairedSnapshots, error) {
	out := &repairedSnapshots{}
	off := uint64(start)
	read := func(p []byte) error {
		if off+uint64(len(p)) > bdrvMaxLength {
			return fmt.Errorf("qcow2: read snapshot table at %#x: %w", off, syscall.EIO)
		}
		if err := readAtZero(c.s, p, off, c.fileSize); err != nil {
			return fmt.Errorf("qcow2: read snapshot table: %w", err)
		}
		off += uint64(len(p))
		return nil
	}
	tableLen := uint64(0)
	for i := range n {
		pre := off
		tableLen = pad8(tableLen)
		off = pad8(off)
		entry := HostOffset(off)
		var fixed [snapshotFixedSize]byte
		if err := read(fixed[:]); err != nil {
			return nil, err
		}
		sn, idLen, nameLen, storedLen := decodeSnapshotFixed(fixed[:], entry)
		stored := uint64(storedLen)
		extraLen := stored
		if stored > maxSnapshotExtraData {
			c.res.msg("Discarding too much extra metadata in snapshot table entry %d (%d > %d)", i, stored, maxSnapshotExtraData)
			out.extraDropped++
			extraLen = maxSnapshotExtraData
		}
		extra := make([]byte, extraLen)
		known := min(extraLen, snapExtraWritten)
		if err := read(extra[:known]); err != nil {
			return nil, err
		}
		if extraLen > known {
			if err := read(extra[known:]); err != nil {
				return nil, err
			}
		}
		off += stored - extraLen // the cut part is skipped
		sn.setExtraData(extra, c.h.Size)
		id, name := make([]byte, idLen), make([]byte, nameLen)
		if err := read(id); err != nil {
			return nil, err
		}
		if err := read(name); err != nil {
			return nil, err
		}
		sn.ID, sn.Name = cString(id), cString(name)
		sn.EntrySize = off - uint64(entry)
		tableLen += snapshotFixedSize + extraLen + uint64(idLen) + uint64(nameLen)
		if tableLen > maxSnapshotTableBytes || off-uint64(start) > 1<<31-1 {
			c.res.msg("Discarding %d overhanging snapshots (snapshot table is too big)", n-i)
			out.reduced = int(n - i)
			off = pre
			break
		}
		out.snaps = append(out.snaps, sn)
	}
	out.size = off - uint64(start)
	return out, nil
}

// applySnapshotRepairs records what readSnapshotsRepairing did: dropped snapshots are written
// to the header's count at once (synced), as QEMU does before the refcount check, and count as
// corruptions fixed; cut extra data is a snapshot table corruption, fixed by the rewrite.
func (c *checker) applySnapshotRepairs(r *repairedSnapshots) error {
	if r.reduced > 0 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(len(r.snaps)))
		if _, err := c.s.WriteAt(b[:], offNbSnapshots); err != nil {
			c.checkError("ERROR failed to update the snapshot count in the image header: %v", err)
			return fmt.Errorf("qcow2: write snapshot count: %w", err)
		}
		if err := c.s.Sync(); err != nil {
			c.checkError("ERROR failed to update the snapshot count in the image header: %v", err)
			return fmt.Errorf("qcow2: sync snapshot count: %w", err)
		}
		c.h.SnapshotCount = uint32(len(r.snaps))
		c.res.CorruptionsFixed += r.reduced
	}
	c.snapCorruptions += r.extraDropped
	return nil
}
