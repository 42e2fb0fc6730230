// The snapshot table rewrite of a RepairAll check (qemu-img check -r all's
// qcow2_check_fix_snapshot_table): complete entries written to newly allocated clusters, the
// header switched to them, the old table freed.
package qcow2

import (
	"encoding/binary"
	"fmt"
	"syscall"
)

// snapExtraWritten is the extra data QEMU writes in every entry: VM state size, disk size and
// instruction count (QCowSnapshotExtraData).
const snapExtraWritten = 24

// encodeSnapshotTable lays the snapshots out as QEMU's qcow2_write_snapshots does: each entry
// 8-byte aligned, with max(24, stored) bytes of extra data (the known fields from the parsed
// entry, unknown ones as stored), and the ID and name up to their first NUL byte. dates holds
// each entry's stored date fields (seconds, nanoseconds), written back as they were. It
// refuses (EFBIG) a table over maxSnapshotTableBytes, as QEMU does.
func encodeSnapshotTable(snaps []Snapshot, dates [][8]byte) ([]byte, error) {
	var b []byte
	for i, sn := range snaps {
		b = append(b, make([]byte, pad8(uint64(len(b)))-uint64(len(b)))...)
		extra := make([]byte, max(snapExtraWritten, len(sn.ExtraData)))
		if len(b)+snapshotFixedSize+len(extra)+len(sn.ID)+len(sn.Name) > maxSnapshotTableBytes {
			return nil, fmt.Errorf("qcow2: rewritten snapshot table over %d bytes: %w", maxSnapshotTableBytes, syscall.EFBIG)
		}
		var h [snapshotFixedSize]byte
		binary.BigEndian.PutUint64(h[0:], uint64(sn.L1Offset))
		binary.BigEndian.PutUint32(h[8:], sn.L1Size)
		binary.BigEndian.PutUint16(h[12:], uint16(len(sn.ID)))
		binary.BigEndian.PutUint16(h[14:], uint16(len(sn.Name)))
		copy(h[16:24], dates[i][:])
		binary.BigEndian.PutUint64(h[24:], uint64(sn.VMClock))
		if sn.VMStateSize <= 0xffffffff {
			// A larger one only in the extra data: older readers see a disk-only snapshot.
			binary.BigEndian.PutUint32(h[32:], uint32(sn.VMStateSize))
		}
		binary.BigEndian.PutUint32(h[36:], uint32(len(extra)))
		binary.BigEndian.PutUint64(extra[snapExtraVMState:], sn.VMStateSize)
		binary.BigEndian.PutUint64(extra[snapExtraDisk:], sn.DiskSize)
		binary.BigEndian.PutUint64(extra[snapExtraICount:], uint64(sn.ICount))
		if len(sn.ExtraData) > snapExtraWritten {
			copy(extra[snapExtraWritten:], sn.ExtraData[snapExtraWritten:])
		}
		b = append(b, h[:]...)
		b = append(b, extra...)
		b = append(b, sn.ID...)
		b = append(b, sn.Name...)
	}
	return b, nil
}

// rewriteSnapshotTable writes the snapshot table read by this check anew, as
// qcow2_write_snapshots does, after the refcount repairs: the new table goes to the first run
// of clusters that have refcount 0 and no reference (QEMU's first-fit allocation), their
// refcounts are set to 1 and synced, the table is written and synced, the header's count and
// offset are switched (synced), and finally the old table's clusters are freed; a crash in
// between leaks clusters at worst. It refuses (ENOTSUP, before writing) when the new clusters
// would need a refcount block that does not exist yet. An old table whose clusters cannot be
// freed (refcount already 0, as for a table past the end of the file) stays where it is, as
// in QEMU ("qcow2_free_clusters failed: Invalid argument").
func (c *checker) rewriteSnapshotTable() error {
	size, err := c.s.Size()
	if err != nil {
		return fmt.Errorf("qcow2: size of image file: %w", err)
	}
	fileSize := uint64(size)
	h, err := checkReadHeader(c.s, fileSize)
	if err != nil {
		return err
	}
	// The refcounts as the repairs left them (a rebuild moves the refcount structures).
	disk, err := loadDiskRefs(c.s, h, fileSize)
	if err != nil {
		return err
	}
	dates := make([][8]byte, len(c.snaps))
	for i, sn := range c.snaps {
		if err := readAtZero(c.s, dates[i][:], uint64(sn.EntryOffset)+16, fileSize); err != nil {
			return fmt.Errorf("qcow2: read snapshot table: %w", err)
		}
	}
	tbl, err := encodeSnapshotTable(c.snaps, dates)
	if err != nil {
		return err
	}
	g := c.g
	n := uint64(g.clustersFor(uint64(len(tbl)))) // at least one: there is an entry to repair
	first, err := c.firstFreeRun(disk, n)
	if err != nil {
		return err
	}
	for k := first; k < first+hostCluster(n); k++ {
		if err := disk.set(k, 1); err != nil {
			return err
		}
	}
	if err := disk.flush(); err != nil {
		return err
	}
	if err := c.s.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync refcounts of the new snapshot table: %w", err)
	}
	at := first.Offset(g)
	if _, err := c.s.WriteAt(tbl, int64(at)); err != nil {
		return fmt.Errorf("qcow2: write snapshot table at %#x: %w", uint64(at), err)
	}
	if err := c.s.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync the new snapshot table: %w", err)
	}
	return c.switchSnapshotTable(disk, at, first, n)
}

// firstFreeRun finds the first n contiguous clusters with stored refcount 0 and no reference,
// each covered by a refcount block inside the file (so that their refcounts can be set
// without allocating one).
func (c *checker) firstFreeRun(disk *diskRefs, n uint64) (hostCluster, error) {
	g := c.g
	// Past the end of the file (as it is now: a rebuild may have grown it) and of every
	// counted reference, everything is free.
	limit := hostCluster(max(uint64(g.clustersFor(disk.fileSize)), c.refs.n, uint64(c.pastEOFNear)+1) + n + 1)
	run := uint64(0)
	for k := hostCluster(1); k < limit; k++ {
		if c.pastEOFFarFrom != 0 && k >= c.pastEOFFarFrom {
			break
		}
		rc, err := disk.get(k)
		if err != nil {
			return 0, err
		}
		// A broken reference past the end of the file is not counted in c.refs, but it
		// still claims its clusters (up to pastEOFNear, and from pastEOFFarFrom on): the
		// table placed there would be cross-linked with it. The rebuild keeps clear of them
		// the same way (rebuild.go).
		if rc != 0 || c.refs.get(k) != 0 || (uint64(k) >= c.nb && k <= c.pastEOFNear) {
			run = 0
			continue
		}
		run++
		if run < n {
			continue
		}
		first := k + 1 - hostCluster(n)
		for j := first; j <= k; j++ {
			i := j.refTableIndex(g)
			if uint64(i) >= uint64(len(disk.table)) || disk.table[i].Offset() == 0 ||
				uint64(disk.table[i].Offset())+c.cs > disk.fileSize {
				return 0, fmt.Errorf("qcow2: the new snapshot table at cluster %d needs a new refcount block: %w", uint64(j), syscall.ENOTSUP)
			}
		}
		return first, nil
	}
	return 0, fmt.Errorf("qcow2: no room for the new snapshot table: %w", syscall.ENOSPC)
}

// switchSnapshotTable points the header at the new table (n clusters from first, at offset
// at) and frees the old one.
func (c *checker) switchSnapshotTable(disk *diskRefs, at HostOffset, first hostCluster, n uint64) error {
	var hb [12]byte
	binary.BigEndian.PutUint32(hb[0:], uint32(len(c.snaps)))
	binary.BigEndian.PutUint64(hb[4:], uint64(at))
	if _, err := c.s.WriteAt(hb[:], offNbSnapshots); err != nil {
		return fmt.Errorf("qcow2: write snapshot table pointer: %w", err)
	}
	if err := c.s.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync snapshot table pointer: %w", err)
	}
	old, oldSize := c.h.SnapshotsOffset, c.snapTableSize
	if oldSize == 0 {
		return nil
	}
	lo, hi := old.cluster(c.g), HostOffset(uint64(old)+oldSize-1).cluster(c.g)
	for k := lo; k <= hi; k++ {
		rc, err := disk.get(k)
		if err != nil || rc == 0 || (k >= first && k < first+hostCluster(n)) {
			// qcow2_free_clusters refuses the whole range (EINVAL) and leaves it as it was.
			c.res.msg("qcow2_free_clusters failed: Invalid argument")
			return nil
		}
	}
	var freed []hostCluster
	for k := lo; k <= hi; k++ {
		rc, _ := disk.get(k)
		if err := disk.set(k, rc-1); err != nil {
			return err
		}
		if rc == 1 {
			freed = append(freed, k)
		}
	}
	if err := disk.flush(); err != nil {
		return err
	}
	if err := c.s.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync after freeing the old snapshot table: %w", err)
	}
	// QEMU passes the discard of freed snapshot clusters down (discard-snapshot=on): the old
	// table's clusters become holes. Best effort, as there.
	if hp, ok := c.s.(HolePuncher); ok {
		for _, k := range freed {
			_ = hp.PunchHole(int64(k.Offset(c.g)), int64(c.cs))
		}
	}
	return nil
}
