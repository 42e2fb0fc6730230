// The warning qemu-img check prints when it opens an image whose bitmaps extension a program
// without bitmap support left behind (docs/bitmaps.md, "Damaged bitmaps").
package main

import (
	"fmt"

	"github.com/qnbd/qnbd/qcow2"
)

// warnInconsistentBitmaps prints QEMU's warning (warn_report, then a hint without a newline)
// when the qcow2 image at name has a bitmaps extension but its autoclear bit is clear: the
// bitmaps are ignored, and their clusters are leaks. Images that cannot be read are left to
// the command's own open.
func (a *app) warnInconsistentBitmaps(name string) {
	s, err := qcow2.OpenFile(name, qcow2.FileOptions{ReadOnly: true})
	if err != nil {
		return
	}
	defer s.Close()
	h, err := qcow2.ReadHeader(s)
	if err != nil || h.Extensions.Bitmaps == nil || h.Autoclear&qcow2.AutoclearBitmaps != 0 {
		return
	}
	if h.Version < 3 {
		a.warnf("This qcow2 v2 image contains bitmaps, but they may have been modified by a program without persistent bitmap support; so now they must all be considered inconsistent")
	} else {
		a.warnf("a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent")
	}
	fmt.Fprint(a.stderr, "Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix.")
}
