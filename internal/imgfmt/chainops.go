// Chain operations for qnbd-img commit and rebase: an open image's backing chain, switching
// its backing file, and emptying it (docs/chains.md).
package imgfmt

import (
	"fmt"

	"github.com/qnbd/qnbd/qcow2"
)

// Chain lists the layers of an open image, top first, each named as QEMU names it (a backing
// file's stored name combined with the name of the image above it). A raw image is one layer.
func Chain(d Disk) []Layer {
	if q, ok := d.(*qcow2Disk); ok {
		return append([]Layer(nil), q.layers...)
	}
	return []Layer{{Filename: d.Filename(), Format: d.Format(), Size: d.Size()}}
}

// SetBackingFile records a new backing file name and format in a qcow2 image's header ("" for
// none). The open image keeps reading its old backing chain. The format is written as given:
// QEMU writes any format name it knows there, opened or not. Raw images have no backing
// file: ErrNotSupported.
func SetBackingFile(d Disk, name, format string) error {
	q, ok := d.(*qcow2Disk)
	if !ok {
		return ErrNotSupported
	}
	img, ok := q.img.(*qcow2.Image)
	if !ok {
		return fmt.Errorf("imgfmt: %T cannot change its backing file: %w", q.img, ErrNotSupported)
	}
	return img.SetBackingFile(name, format)
}

// MakeEmpty deallocates every cluster of a qcow2 image so that its backing file shows through
// everywhere, as qemu-img commit leaves the image it committed. Raw images cannot be emptied:
// ErrNotSupported (which qemu-img commit ignores, as QEMU does).
func MakeEmpty(d Disk) error {
	q, ok := d.(*qcow2Disk)
	if !ok {
		return ErrNotSupported
	}
	img, ok := q.img.(*qcow2.Image)
	if !ok {
		return fmt.Errorf("imgfmt: %T cannot be emptied: %w", q.img, ErrNotSupported)
	}
	return img.MakeEmpty()
}
