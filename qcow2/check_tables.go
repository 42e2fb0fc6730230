// The tables Check walks besides L1/L2: the bitmap directory and bitmap tables, and (until the
// snapshot reader lands in snapshot.go) a minimal bounded reader of the snapshot table.
package qcow2

import (
	"encoding/binary"
	"fmt"
)

// walkBitmaps counts the bitmap directory, each bitmap table and the clusters the tables point
// to, as qcow2_check_bitmaps_refcounts does. Bitmaps count only while the bitmaps autoclear bit
// says the extension is consistent: QEMU ignores them otherwise (and their clusters leak). A
// directory that cannot be parsed fails the check, as in QEMU; bitmap contents are not checked.
func (c *checker) walkBitmaps() error {
	b := c.h.Extensions.Bitmaps
	if b == nil || c.h.Autoclear&AutoclearBitmaps == 0 || b.Count == 0 {
		return nil
	}
	c.inc(b.DirectoryStart, b.DirectorySize)
	// The header's validation bounds the directory to 64 MiB inside the file.
	dir := make([]byte, b.DirectorySize)
	if err := readAtZero(c.s, dir, uint64(b.DirectoryStart), c.fileSize); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: could not read the bitmap directory: %v", err)
		return err
	}
	type bitmapTable struct {
		off  HostOffset
		size uint32
	}
	var tables []bitmapTable
	for i, pos := uint32(0), uint64(0); i < b.Count; i++ {
		if pos+bitmapDirEntryFixedSize > uint64(len(dir)) {
			return c.bitmapDirErr("entry %d runs past the end of the %d-byte directory", i, len(dir))
		}
		r := readBuf(dir[pos:])
		t := bitmapTable{off: HostOffset(r.u64()), size: r.u32()}
		r.u32() // flags
		r.u8()  // type
		r.u8()  // granularity_bits
		nameSize := uint64(r.u16())
		extra := uint64(r.u32())
		n := pad8(bitmapDirEntryFixedSize + extra + nameSize)
		if pos+n > uint64(len(dir)) {
			return c.bitmapDirErr("entry %d (%d bytes) runs past the end of the %d-byte directory", i, n, len(dir))
		}
		if t.off == 0 || t.off.InCluster(c.g) != 0 || t.size == 0 || t.size > maxBitmapTableEntries {
			return c.bitmapDirErr("entry %d has an invalid bitmap table (offset %#x, %d entries)", i, uint64(t.off), t.size)
		}
		tables = append(tables, t)
		pos += n
	}
	for _, t := range tables {
		size := uint64(t.size) * 8
		c.inc(t.off, size)
		if uint64(t.off)+size > c.fileSize {
			c.corrupt("ERROR bitmap table at %#x (%d entries) runs past the end of the file", uint64(t.off), t.size)
			break
		}
		buf := make([]byte, size)
		if err := readAtZero(c.s, buf, uint64(t.off), c.fileSize); err != nil {
			c.corrupt("ERROR could not read bitmap table at %#x: %v", uint64(t.off), err)
			break
		}
		for j := uint64(0); j < uint64(t.size); j++ {
			e := binary.BigEndian.Uint64(buf[j*8:])
			off := HostOffset(e & bitmapEntryOffsetMask)
			if e&bitmapEntryReservedMask != 0 || (off != 0 && (e&bitmapEntryAllOnes != 0 || off.InCluster(c.g) != 0)) {
				c.corrupt("ERROR bitmap table at %#x: invalid entry %d: %#x", uint64(t.off), j, e)
				continue
			}
			if off != 0 {
				c.inc(off, c.cs)
			}
		}
	}
	return nil
}

func (c *checker) bitmapDirErr(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	c.corrupt("ERROR bitmap directory: %s", msg)
	return corruptf("bitmap directory: %s", msg)
}

// chkSnapshot is what Check needs of a snapshot table entry.
type chkSnapshot struct {
	ID, Name string
	L1Offset HostOffset
	L1Size   uint32
}

// readSnapshotTable reads the snapshot table entry by entry, never past the end of the file or
// the 64 MiB table limit, and returns the entries and the table's size in bytes (from its start
// to the end of the last entry's name, as QEMU counts it).
func (c *checker) readSnapshotTable() error {
	h := c.h
	if h.SnapshotCount == 0 {
		return nil
	}
	start := uint64(h.SnapshotsOffset)
	pos := start
	var fixed [snapshotFixedSize]byte
	for i := uint32(0); i < h.SnapshotCount; i++ {
		pos = pad8(pos)
		if err := c.snapRead(fixed[:], pos, start, i); err != nil {
			return err
		}
		r := readBuf(fixed[:])
		sn := chkSnapshot{L1Offset: HostOffset(r.u64()), L1Size: r.u32()}
		idLen, nameLen := uint64(r.u16()), uint64(r.u16())
		r.bytes(20) // date_sec, date_nsec, vm_clock_nsec, vm_state_size
		extra := uint64(r.u32())
		if extra > MaxSnapshotExtraData {
			return c.snapErr("snapshot %d has %d bytes of extra data, more than %d", i, extra, MaxSnapshotExtraData)
		}
		pos += snapshotFixedSize + extra
		names := make([]byte, idLen+nameLen)
		if err := c.snapRead(names, pos, start, i); err != nil {
			return err
		}
		sn.ID, sn.Name = string(names[:idLen]), string(names[idLen:])
		pos += idLen + nameLen
		c.snaps = append(c.snaps, sn)
	}
	c.snapTableSize = pos - start
	return nil
}

func (c *checker) snapRead(p []byte, pos, start uint64, i uint32) error {
	end := pos + uint64(len(p))
	if end-start > MaxSnapshotTableBytes {
		return c.snapErr("snapshot table is larger than %d bytes at entry %d", MaxSnapshotTableBytes, i)
	}
	if end > c.fileSize {
		return c.snapErr("snapshot table entry %d runs past the end of the file", i)
	}
	if err := readAtZero(c.s, p, pos, c.fileSize); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: could not read the snapshot table: %v", err)
		return err
	}
	return nil
}

func (c *checker) snapErr(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	c.res.CheckErrors++
	c.res.msg("ERROR: snapshot table: %s", msg)
	return corruptf("snapshot table: %s", msg)
}
