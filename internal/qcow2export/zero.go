// TRIM and WRITE_ZEROES: discard=unmap, NO_HOLE, FAST_ZERO and FUA.
package qcow2export

import (
	"context"
	"errors"

	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

// Trim releases the whole clusters of [off, off+length) with --discard=unmap (Image.Discard,
// which does what QEMU's qcow2 driver does, nothing for a version 2 image with a backing
// file), and does nothing otherwise (qemu's discard=ignore). Discard is advisory: a store
// without hole punching is not an error.
func (b *Backend) Trim(_ context.Context, off, length uint64, fua bool) error {
	if !b.opts.Discard {
		return nil
	}
	err := b.img.Discard(qcow2.GuestOffset(off), length)
	if err != nil && !errors.Is(err, qcow2.ErrUnsupported) {
		return classify(err)
	}
	return b.fua(fua)
}

// WriteZeroes makes [off, off+length) read as zeros with Image.Zero, QEMU's write-zeroes. It
// may deallocate whenever the client allows holes (no NO_HOLE): qemu-nbd 7.2 passes
// MAY_UNMAP to its qcow2 driver whatever --discard says (measured: with --discard=ignore a
// WRITE_ZEROES without NO_HOLE frees the clusters while a TRIM does nothing). FAST_ZERO is
// QEMU's BDRV_REQ_NO_FALLBACK: ENOTSUP where zero bytes would have to be written (the pieces
// before it are zeroed already, as in QEMU; a version 2 image refuses it at once).
func (b *Backend) WriteZeroes(_ context.Context, off, length uint64, f server.ZeroFlags) error {
	var flags qcow2.ZeroFlags
	if !f.NoHole {
		flags |= qcow2.ZeroMayUnmap
	}
	if f.FastZero {
		flags |= qcow2.ZeroNoFallback
	}
	if err := b.img.Zero(qcow2.GuestOffset(off), length, flags); err != nil {
		return classify(err)
	}
	return b.fua(f.FUA)
}
