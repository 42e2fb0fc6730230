// qnbd-img convert --bitmaps [--skip-broken-bitmaps]: the source's persistent bitmaps
// (names, granularities, enabled state, bits) copied into a qcow2 target after the data, with
// qemu-img 7.2's checks, messages and order (docs/bitmaps.md).
package main

import (
	"errors"
	"fmt"

	"github.com/qnbd/qnbd/internal/imgfmt"
)

// convertCheckBitmaps refuses what qemu-img refuses before creating the target: several
// sources, a source without bitmap support, an in-use bitmap without --skip-broken-bitmaps.
// QEMU visits a source's bitmaps newest first, in reverse directory order.
func (a *app) convertCheckBitmaps(r convertRequest, srcs []imgfmt.Disk) bool {
	if len(srcs) > 1 {
		a.errorf("Copying bitmaps only possible with single source")
		return false
	}
	if !imgfmt.SupportsBitmaps(srcs[0]) {
		a.errorf("Source lacks bitmap support")
		return false
	}
	if r.skipBroken {
		return true
	}
	list := imgfmt.ListBitmaps(srcs[0])
	for i := len(list) - 1; i >= 0; i-- {
		if list[i].InUse {
			a.errorf("Cannot copy inconsistent bitmap '%s'", list[i].Name)
			fmt.Fprintf(a.stderr, "Try --skip-broken-bitmaps, or use '%s bitmap --remove' to delete it\n", a.prog)
			return false
		}
	}
	return true
}

// targetTakesBitmaps refuses a target that cannot hold persistent bitmaps (raw, qcow2 version
// 2), closing it.
func (a *app) targetTakesBitmaps(dst imgfmt.Disk) bool {
	if imgfmt.SupportsBitmaps(dst) {
		return true
	}
	a.errorf("Format driver '%s' does not support bitmaps", dst.Format())
	dst.Close()
	return false
}

// errBitmapCopy is a bitmap copy that failed after its message was printed.
var errBitmapCopy = errors.New("copying the bitmaps failed")

// bitmapCopy returns what copies the bitmaps once the data is copied (nil without
// --bitmaps): each bitmap, newest first as QEMU visits them, is added to the target with its
// granularity and state and its bits merged in; an in-use one is skipped with a warning
// (--skip-broken-bitmaps). A bitmap whose bits cannot be merged is removed again.
func (a *app) bitmapCopy(r convertRequest, srcs []imgfmt.Disk, dst imgfmt.Disk) func() error {
	if !r.bitmaps {
		return nil
	}
	return func() error {
		list := imgfmt.ListBitmaps(srcs[0])
		for i := len(list) - 1; i >= 0; i-- {
			b := list[i]
			if b.InUse {
				a.warnf("Skipping inconsistent bitmap '%s'", b.Name)
				continue
			}
			if err := imgfmt.AddBitmap(dst, b.Name, b.Granularity, !b.Auto); err != nil {
				a.errorf("Failed to create bitmap %s: %s", b.Name, bitmapErrorText(b.Name, err))
				return errBitmapCopy
			}
			if err := imgfmt.MergeBitmap(dst, b.Name, srcs[0], b.Name); err != nil {
				a.errorf("Failed to populate bitmap %s: %s", b.Name, bitmapErrorText(b.Name, err))
				imgfmt.RemoveBitmap(dst, b.Name)
				return errBitmapCopy
			}
		}
		return nil
	}
}
