// The tables Check walks besides L1/L2: the bitmap directory and bitmap tables, and the
// snapshot table (read by ReadSnapshots).
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
			c.res.CheckErrors++
			c.res.msg("ERROR could not read bitmap table at %#x: %v", uint64(t.off), err)
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

// readSnapshotTable reads the snapshot table (ReadSnapshots bounds it) and its size in bytes:
// from its start to the end of the last entry's name, as QEMU counts it. A table that cannot be
// read fails the check.
func (c *checker) readSnapshotTable() error {
	snaps, err := ReadSnapshots(c.s, c.h)
	if err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: could not read the snapshot table: %v", err)
		return err
	}
	c.snaps = snaps
	if n := len(snaps); n > 0 {
		last := snaps[n-1]
		c.snapTableSize = uint64(last.EntryOffset) + last.EntrySize - uint64(c.h.SnapshotsOffset)
	}
	return nil
}
