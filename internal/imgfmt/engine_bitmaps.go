// The engine's persistent bitmap operations (add, remove, clear, enable, disable, merge) for
// qemu-img bitmap and convert --bitmaps, in this package's terms; like engine.go, the only
// place naming them.
package imgfmt

import "github.com/qnbd/qnbd/qcow2"

// BitmapError is a refused bitmap operation with QEMU's text (qcow2.BitmapError).
type BitmapError = qcow2.BitmapError

// ErrBitmapsUnsupported is QEMU's answer to storing a persistent bitmap in an image whose
// format has none (raw): "Can't store persistent bitmaps to NODE: Operation not supported".
var ErrBitmapsUnsupported error = QemuError("Operation not supported")

// engineBitmaps is the engine image of a qcow2 Disk, or nil for another format.
func engineBitmaps(d Disk) *qcow2.Image {
	img, _ := snapshotImage(d)
	return img
}

// DefaultBitmapGranularity is what a bitmap added to d without -g gets.
func DefaultBitmapGranularity(d Disk) uint64 {
	if img := engineBitmaps(d); img != nil {
		return img.DefaultBitmapGranularity()
	}
	return 65536
}

// AddBitmap adds an empty persistent bitmap (granularity 0: the default).
func AddBitmap(d Disk, name string, granularity uint64, disabled bool) error {
	img := engineBitmaps(d)
	if img == nil {
		if name == "" {
			return &BitmapError{Msg: "Bitmap name cannot be empty"}
		}
		if granularity != 0 && (granularity < 512 || granularity&(granularity-1) != 0) {
			return &BitmapError{Msg: "Granularity must be power of 2 and at least 512"}
		}
		return ErrBitmapsUnsupported
	}
	return img.AddBitmap(name, granularity, disabled)
}

// RemoveBitmap removes a persistent bitmap, in-use or not.
func RemoveBitmap(d Disk, name string) error {
	img := engineBitmaps(d)
	if img == nil {
		return &BitmapError{Msg: "Dirty bitmap '" + name + "' not found"}
	}
	return img.RemoveBitmap(name)
}

// ClearBitmap makes a bitmap all clean.
func ClearBitmap(d Disk, name string) error {
	img := engineBitmaps(d)
	if img == nil {
		return &BitmapError{Msg: "Dirty bitmap '" + name + "' not found"}
	}
	return img.ClearBitmap(name)
}

// EnableBitmap enables or disables a bitmap.
func EnableBitmap(d Disk, name string, enable bool) error {
	img := engineBitmaps(d)
	if img == nil {
		return &BitmapError{Msg: "Dirty bitmap '" + name + "' not found"}
	}
	return img.EnableBitmap(name, enable)
}

// MergeBitmap merges the bitmap srcName of src (which may be d; another qcow2 image must be
// opened with ReadBitmaps) into the bitmap dst of d.
func MergeBitmap(d Disk, dst string, src Disk, srcName string) error {
	img := engineBitmaps(d)
	if img == nil {
		return &BitmapError{Msg: "Dirty bitmap '" + dst + "' not found"}
	}
	return img.MergeBitmap(dst, engineBitmaps(src), srcName)
}

// SupportsBitmaps reports whether d can hold persistent bitmaps: a version 3 qcow2 image
// (QEMU's bdrv_supports_persistent_dirty_bitmap).
func SupportsBitmaps(d Disk) bool {
	img := engineBitmaps(d)
	return img != nil && img.Header().Version >= 3
}

// ListBitmaps lists d's own persistent bitmaps in directory order (a read-only qcow2 image
// must be opened with ReadBitmaps).
func ListBitmaps(d Disk) []Bitmap {
	img := engineBitmaps(d)
	if img == nil {
		return nil
	}
	var out []Bitmap
	for _, b := range img.Bitmaps() {
		out = append(out, Bitmap{Name: b.Name, Granularity: b.Granularity, InUse: b.InUse, Auto: b.Enabled})
	}
	return out
}

// BitmapsIgnored reports whether d had a bitmaps extension QEMU ignores when it was opened
// (the autoclear bit off: qcow2.Header.BitmapsIgnored), and whether d is a version 2 image:
// QEMU words its warning differently then.
func BitmapsIgnored(d Disk) (ignored, v2 bool) {
	img := engineBitmaps(d)
	if img == nil {
		return false, false
	}
	return img.BitmapsIgnoredAtOpen(), img.Header().Version < 3
}
