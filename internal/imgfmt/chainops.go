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

// engineOf returns the qcow2 engine image under d, or ErrNotSupported for other formats.
func engineOf(d Disk) (*qcow2.Image, error) {
	q, ok := d.(*qcow2Disk)
	if !ok {
		return nil, ErrNotSupported
	}
	img, ok := q.img.(*qcow2.Image)
	if !ok {
		return nil, fmt.Errorf("imgfmt: %T cannot be amended: %w", q.img, ErrNotSupported)
	}
	return img, nil
}

// Amendment is one header change of qnbd-img amend (see the qcow2 engine's amend.go).
type Amendment int

// The amendments, applied by Amend.
const (
	AmendLazyRefcountsOn Amendment = iota
	AmendLazyRefcountsOff
	AmendUpgrade
	AmendPrepareDowngrade
	AmendDowngrade
)

// Amend applies one header change to a qcow2 image. A refusal in QEMU's words is a
// *qcow2.AmendError.
func Amend(d Disk, a Amendment) error {
	img, err := engineOf(d)
	if err != nil {
		return err
	}
	switch a {
	case AmendLazyRefcountsOn:
		return img.SetLazyRefcounts(true)
	case AmendLazyRefcountsOff:
		return img.SetLazyRefcounts(false)
	case AmendUpgrade:
		return img.Upgrade()
	case AmendPrepareDowngrade:
		return img.PrepareDowngrade()
	case AmendDowngrade:
		return img.Downgrade()
	}
	return fmt.Errorf("imgfmt: unknown amendment %d", a)
}

// Deallocate clears the whole clusters of [off, off+n) of a qcow2 image, whatever they hold.
func Deallocate(d Disk, off, n uint64) error {
	img, err := engineOf(d)
	if err != nil {
		return err
	}
	return img.Deallocate(off, n)
}
