// The open-time warning QEMU gives for persistent bitmaps it must ignore (docs/bitmaps.md).
package qcow2

// Texts of QEMU's warning (qcow2_read_extensions) for a bitmaps extension without the
// autoclear bit: version 2 headers have no autoclear field at all.
const (
	bitmapsIgnoredV2 = "This qcow2 v2 image contains bitmaps, but they may have been modified by a program without persistent bitmap support; so now they must all be considered inconsistent"
	bitmapsIgnoredV3 = "a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent"
	// BitmapsIgnoredHint follows the warning, without a newline, as QEMU prints it.
	BitmapsIgnoredHint = "Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix."
)

// WarnIgnoredBitmaps calls warn (if not nil) when h lists bitmaps that no reader may trust,
// as QEMU's open does: for callers that read a header without opening the image.
func WarnIgnoredBitmaps(h *Header, warn func(warning, hint string)) { warnInconsistentBitmaps(h, warn) }

// warnInconsistentBitmaps calls warn when h lists bitmaps that no reader may trust.
func warnInconsistentBitmaps(h *Header, warn func(warning, hint string)) {
	if warn == nil || h.Extensions.Bitmaps == nil || h.bitmapsConsistent() {
		return
	}
	if h.Version < 3 {
		warn(bitmapsIgnoredV2, BitmapsIgnoredHint)
		return
	}
	warn(bitmapsIgnoredV3, BitmapsIgnoredHint)
}
