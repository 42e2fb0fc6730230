// The table Check walks besides L1/L2 and the bitmaps (check_bitmap.go): the snapshot table
// (read by LoadSnapshots, with qemu-img check's verdicts on it).
package qcow2

import (
	"errors"
	"fmt"
	"math"
	"syscall"
)

// bdrvMaxLength is QEMU's BDRV_MAX_LENGTH (INT64_MAX aligned down to 1 GiB): a read that
// reaches past it fails with EIO.
const bdrvMaxLength = math.MaxInt64 &^ (1<<30 - 1)

// readSnapshotTable reads the snapshot table as qemu-img check does
// (qcow2_check_read_snapshot_table): the count and offset are checked as at open
// (qcow2_validate_table), the entries are read as at open (LoadSnapshots: bytes past the end of
// the file read as zeros), and then each version 3 entry with less than 16 bytes of extra data
// is a corruption ("snapshot table entry N is incomplete"). A table that cannot be read fails
// the check with QEMU's messages and errno. Its size in bytes, from its start to the end of the
// last entry's name, is what the refcount check counts.
//
// With RepairAll the entries are read as qemu-img check -r all reads them
// (readSnapshotsRepairing: extra data over 1 KiB cut, entries past the 64 MiB limit dropped),
// and cut or incomplete entries are repaired after the refcount check by rewriting the table
// (rewriteSnapshotTable). More than maxSnapshots snapshots are refused instead (a check error,
// before anything is written): QEMU 7.2 drops the excess, then fails to rewrite the table and
// marks the image corrupt.
func (c *checker) readSnapshotTable() error {
	n, start := c.h.SnapshotCount, c.h.SnapshotsOffset
	if n > maxSnapshots {
		c.checkError("ERROR snapshot table too large")
		c.res.msg("You can force-remove all %d overhanging snapshots with qemu-img check -r all", n-maxSnapshots)
		return c.snapshotRepairRefused(fmt.Errorf("qcow2: check: %d snapshots (at most %d): %w", n, maxSnapshots, syscall.EFBIG))
	}
	if uint64(start) > math.MaxInt64-uint64(n)*snapshotFixedSize || start.inCluster(c.g) != 0 {
		c.checkError("ERROR snapshot table offset invalid")
		return fmt.Errorf("qcow2: check: snapshot table offset %#x: %w", uint64(start), syscall.EINVAL)
	}
	if n == 0 {
		return nil
	}
	eio := func() error {
		c.checkError("ERROR failed to read the snapshot table: Failed to read snapshot table: Input/output error")
		return fmt.Errorf("qcow2: check: snapshot table at %#x lies past the largest readable offset: %w", uint64(start), syscall.EIO)
	}
	if uint64(start)+snapshotFixedSize > bdrvMaxLength {
		return eio()
	}
	var snaps []Snapshot
	var size uint64
	if c.mode == RepairAll {
		r, err := c.readSnapshotsRepairing(n, start)
		if err != nil {
			c.checkError("ERROR failed to read the snapshot table: Failed to read snapshot table: Input/output error")
			return fmt.Errorf("qcow2: check: %v: %w", err, syscall.EIO)
		}
		if err := c.applySnapshotRepairs(r); err != nil {
			return err
		}
		snaps, size = r.snaps, r.size
	} else {
		var err error
		if snaps, err = LoadSnapshots(c.s, c.h); err != nil {
			return c.snapshotReadFailed(err, n)
		}
		size = snapshotTableSize(c.h, snaps)
		if uint64(start)+size > bdrvMaxLength {
			return eio()
		}
	}
	if c.h.Version >= 3 {
		verb := "ERROR"
		if c.mode == RepairAll {
			verb = "Repairing" // rewriteSnapshotTable, once the refcounts are repaired
		}
		for i, sn := range snaps {
			if len(sn.ExtraData) < minSnapshotExtraDataV3 {
				// Counted apart until the refcount check is done: QEMU keeps these in a result
				// of their own, so they do not stop -r leaks from fixing COPIED flags.
				c.snapCorruptions++
				c.res.msg("%s snapshot table entry %d is incomplete", verb, i)
			}
		}
	}
	c.snaps = snaps
	c.snapTableSize = size
	return nil
}

// snapshotReadFailed reports a snapshot table that LoadSnapshots refused, in qemu-img check's
// words: too much extra data in an entry or a table over 64 MiB (EFBIG, which -r all would
// repair), anything else a read error (EIO). The error does not match ErrFormat: the image was
// opened, its check failed.
func (c *checker) snapshotReadFailed(err error, n uint32) error {
	var fe *FormatError
	var i uint32
	var part string
	if errors.As(err, &fe) {
		if _, serr := fmt.Sscanf(fe.Field, "snapshot[%d].%s", &i, &part); serr == nil {
			if part == "extra_data_size" {
				c.checkError("ERROR failed to read the snapshot table: Too much extra metadata in snapshot table entry %d", i)
				c.res.msg("You can force-remove this extra metadata with qemu-img check -r all")
			} else {
				c.checkError("ERROR failed to read the snapshot table: Snapshot table is too big")
				c.res.msg("You can force-remove all %d overhanging snapshots with qemu-img check -r all", n-i)
			}
			return c.snapshotRepairRefused(fmt.Errorf("qcow2: check: %v: %w", err, syscall.EFBIG))
		}
	}
	c.checkError("ERROR failed to read the snapshot table: Failed to read snapshot table: Input/output error")
	return fmt.Errorf("qcow2: check: %v: %w", err, syscall.EIO)
}

// snapshotRepairRefused is what a RepairAll check does with more snapshots than maxSnapshots:
// it refuses, with a check error, before writing anything. In the other modes it returns err
// unchanged (qemu-img's verdict).
func (c *checker) snapshotRepairRefused(err error) error {
	if c.mode != RepairAll {
		return err
	}
	c.checkError("ERROR dropping the snapshots over the limit is not supported (qemu-img check -r all drops them, then fails to rewrite the table); the image was not changed")
	return fmt.Errorf("qcow2: check: repairing the snapshot table: %w", syscall.ENOTSUP)
}

// checkError counts one check error and records its message.
func (c *checker) checkError(format string, args ...any) {
	c.res.CheckErrors++
	c.res.msg(format, args...)
}
