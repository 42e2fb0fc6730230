// qnbd-img snapshot: list, create, apply or delete internal snapshots, as qemu-img 7.2's
// img_snapshot (its options ":la:c:d:hqU"; 7.2 has no -f here, and refuses it).
package main

import (
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/qnbd/qnbd/internal/getopt"
	"github.com/qnbd/qnbd/internal/imgfmt"
)

// snapshotAction is the one action a snapshot command performs.
type snapshotAction int

const (
	snapNone snapshotAction = iota
	snapList
	snapApply
	snapCreate
	snapDelete
)

// snapshotNameMax is the longest name qemu-img keeps: it copies the name into
// QEMUSnapshotInfo's 256-byte buffer (pstrcpy), cutting the rest.
const snapshotNameMax = 255

func (a *app) snapshot(argv []string) int {
	var action snapshotAction
	var name string
	var forceShare bool
	g := getopt.New(argv, ":la:c:d:hqU", []getopt.Option{longHelp, longObject, longImageOpts, longForceShare})
	set := func(act snapshotAction) int {
		if action != snapNone {
			return a.usage("Cannot mix '-l', '-a', '-c', '-d'")
		}
		action, name = act, g.Arg
		return 0
	}
	for c := g.Next(); c != getopt.End; c = g.Next() {
		code := 0
		switch c {
		case 'l':
			code = set(snapList)
		case 'a':
			code = set(snapApply)
		case 'c':
			code = set(snapCreate)
		case 'd':
			code = set(snapDelete)
		case 'q':
			// Nothing the command prints is progress or chatter: -q changes nothing.
		case 'U':
			forceShare = true
		default:
			if code, done := a.commonOption(g, c); done {
				return code
			}
		}
		if code != 0 {
			return code
		}
	}
	ops := g.Operands()
	if len(ops) != 1 {
		return a.usage("Expecting one image file name")
	}
	file := ops[0]
	readOnly := action == snapList
	if forceShare && !readOnly {
		a.errorf("Could not open '%s': force-share=on can only be used with read-only images", file)
		return 1
	}
	d := a.openImage(file, "", imgfmt.OpenOptions{ReadOnly: readOnly, ForceShare: forceShare})
	if d == nil {
		return 1
	}
	if !readOnly && d.Format() == imgfmt.Raw {
		// Printed by QEMU when it opens a probed raw image for writing (-f is not accepted
		// here, so a raw image is always probed).
		a.probedRawWarning(file)
	}
	code := a.snapshotAct(d, action, name)
	if err := d.Close(); err != nil && code == 0 {
		a.errorf("%s", describe(err))
		code = 1
	}
	return code
}

// probedRawWarning is QEMU's warning for a raw image opened read-write without -f.
func (a *app) probedRawWarning(file string) {
	fmt.Fprintf(a.stderr, "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"+
		"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n"+
		"         Specify the 'raw' format explicitly to remove the restrictions.\n", file)
}

// snapshotAct performs the action on the open image and returns the exit status.
func (a *app) snapshotAct(d imgfmt.Disk, action snapshotAction, name string) int {
	switch action {
	case snapList:
		snaps := imgfmt.ListSnapshots(d)
		if len(snaps) == 0 {
			return 0
		}
		fmt.Fprintln(a.stdout, "Snapshot list:")
		fmt.Fprintln(a.stdout, snapshotHeader())
		for _, s := range snaps {
			fmt.Fprintln(a.stdout, snapshotLine(s))
		}
	case snapCreate:
		if len(name) > snapshotNameMax {
			name = name[:snapshotNameMax]
		}
		if err := imgfmt.CreateSnapshot(d, name, time.Now()); err != nil {
			en := errnoOf(err, syscall.EIO)
			a.errorf("Could not create snapshot '%s': %d (%s)", name, -int(en), strerror(en))
			return 1
		}
	case snapApply:
		if d.Format() == imgfmt.Raw {
			// QEMU's raw driver has no snapshots: bdrv_snapshot_goto closes it, tries the
			// file below, and opens it again, which warns a second time.
			a.probedRawWarning(d.Filename())
		}
		if err := imgfmt.ApplySnapshot(d, name); err != nil {
			a.errorf("Could not apply snapshot '%s': %s", name, applyErrorText(err))
			return 1
		}
	case snapDelete:
		err := imgfmt.DeleteSnapshot(d, name)
		switch {
		case err == nil:
		case imgfmt.IsSnapshotNotFound(err):
			a.errorf("Could not delete snapshot '%s': snapshot not found", name)
			return 1
		default:
			a.errorf("Could not delete snapshot '%s': Failed to remove snapshot from snapshot list: %s", name, strerror(errnoOf(err, syscall.EIO)))
			return 1
		}
	}
	return 0
}

// applyErrorText is bdrv_snapshot_goto's message for err.
func applyErrorText(err error) string {
	var qe imgfmt.QemuError
	switch {
	case errors.Is(err, imgfmt.ErrActiveBitmaps):
		return "Device has active dirty bitmaps"
	case errors.As(err, &qe):
		return string(qe)
	case imgfmt.IsSnapshotNotFound(err):
		return "Failed to load snapshot: " + strerror(syscall.ENOENT)
	}
	return "Failed to load snapshot: " + strerror(errnoOf(err, syscall.EIO))
}

// errnoOf returns the errno inside err, or def when it carries none.
func errnoOf(err error, def syscall.Errno) syscall.Errno {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return def
}
