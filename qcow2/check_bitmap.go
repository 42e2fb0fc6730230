// The bitmaps' part of Check: the directory, each bitmap table and the data clusters the tables
// point to are references, counted as QEMU 7.2's qcow2_check_bitmaps_refcounts counts them
// (docs/bitmaps.md, "Damaged bitmaps").
package qcow2

import (
	"errors"
	"fmt"
	"syscall"
)

// walkBitmaps counts the bitmap directory, then for each bitmap (in-use ones too) its table
// and the data clusters its entries name. Bitmaps count only while the autoclear bit says the
// extension is consistent: QEMU ignores them otherwise, and their clusters leak.
//
// A table QEMU cannot load (an invalid entry, or one past its largest readable offset) is one
// corruption and fails the check with EINVAL or EIO, without a message, as qemu-img's "Check
// failed: Invalid argument"; so does a directory that does not parse (which an open refuses
// first, validateBitmapsAtOpen). Bitmap contents are not checked.
func (c *checker) walkBitmaps() error {
	if !c.h.bitmapsConsistent() {
		return nil
	}
	b := c.h.Extensions.Bitmaps
	c.inc(b.DirectoryStart, b.DirectorySize)
	entries, err := readBitmapDirectory(c.s, c.h, c.fileSize, c.h.Size)
	if err != nil {
		return c.bitmapCheckFailed(err)
	}
	for i := range entries {
		e := &entries[i]
		c.inc(e.tableOff, uint64(e.tableSize)*8)
		table, errno, err := readCheckedBitmapTable(c.s, e, c.cs, c.fileSize)
		if err != nil {
			return c.bitmapCheckFailed(err)
		}
		if errno != 0 {
			return c.bitmapCheckFailed(fmt.Errorf("bitmap '%s': its table at %#x cannot be loaded: %w", e.name, uint64(e.tableOff), errno))
		}
		for _, v := range table {
			if off := HostOffset(v & bitmapEntryOffsetMask); off != 0 {
				c.inc(off, c.cs)
			}
		}
	}
	return nil
}

// bitmapCheckFailed ends a check that met bitmaps it cannot walk: one corruption (QEMU's
// count) and one check error (the check did not complete), and no message: qemu-img prints
// only "Check failed: " and the errno's text.
func (c *checker) bitmapCheckFailed(err error) error {
	c.res.Corruptions++
	c.res.CheckErrors++
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("qcow2: check: %w", err)
	}
	return fmt.Errorf("qcow2: check: %w: %w", err, syscall.EINVAL)
}
