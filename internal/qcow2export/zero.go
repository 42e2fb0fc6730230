// TRIM and WRITE_ZEROES: discard=unmap, NO_HOLE, FAST_ZERO and FUA.
package qcow2export

import (
	"context"
	"errors"
	"syscall"

	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

// errSlowZero is the FAST_ZERO refusal: the engine would have to write zero bytes.
var errSlowZero = &Error{Err: errors.New("qcow2: zeroing this range would write data"), Errno: syscall.ENOTSUP}

// Trim deallocates the whole clusters of [off, off+length) with --discard=unmap, and does
// nothing otherwise (qemu's discard=ignore). Discard is advisory: a store without hole
// punching is not an error. A version 2 image with a backing file is never discarded: without
// a zero flag the clusters would show the backing file's old data again, which QEMU refuses
// too (qcow2_co_pdiscard returns ENOTSUP, and its NBD server then replies success).
func (b *Backend) Trim(_ context.Context, off, length uint64, fua bool) error {
	if !b.opts.Discard {
		return nil
	}
	if h := b.img.Header(); h.Version < 3 && h.BackingFile != "" {
		return b.fua(fua)
	}
	err := b.img.Discard(off, length)
	if err != nil && !errors.Is(err, qcow2.ErrNotSupported) {
		return classify(err)
	}
	return b.fua(fua)
}

// WriteZeroes makes [off, off+length) read as zeros. It may deallocate only when the client
// allows holes (no NO_HOLE) and the export has --discard=unmap, as QEMU drops MAY_UNMAP for a
// node opened without discard=unmap. With FastZero it fails with ENOTSUP, before changing
// anything, unless the engine can do the whole request in its metadata.
func (b *Backend) WriteZeroes(_ context.Context, off, length uint64, f server.ZeroFlags) error {
	unmap := !f.NoHole && b.opts.Discard
	if f.FastZero {
		fast, err := b.zeroIsFast(off, length)
		if err != nil {
			return classify(err)
		}
		if !fast {
			return errSlowZero
		}
	}
	if err := b.img.WriteZeroes(off, length, unmap); err != nil {
		return classify(err)
	}
	return b.fua(f.FUA)
}

// zeroIsFast predicts whether Image.WriteZeroes(off, n, unmap) changes metadata only, with or
// without unmap. It follows the engine's rules (qcow2/zero.go):
//
//   - a raw external data file (which must stay a consistent raw image) gets a hole punched
//     where its file system can, zeros written elsewhere: whether that is fast is only known
//     by trying, so it is refused (QEMU would try the file system's own fast zeroing);
//   - the unaligned head and tail of the range (parts of a subcluster) are written unless this
//     image already reads them as zeros (a zero cluster, or unallocated without a backing
//     file);
//   - whole subclusters of a version 3 image only get zero flags or are deallocated, except
//     a compressed cluster only partly covered in an extended-L2 image;
//   - a version 2 image has no zero flag: it is refused whatever the range, as QEMU refuses
//     it (its qcow2 driver offers BDRV_REQ_NO_FALLBACK only for version 3), although the
//     engine could deallocate an image without a backing file with unmap.
//
// The answer is made from a Map before the write: a write racing with it can only make a
// zeroing that was predicted fast write data, never the reverse harm of skipping a request.
func (b *Backend) zeroIsFast(off, n uint64) (bool, error) {
	if n == 0 {
		return true, nil
	}
	h := b.img.Header()
	if h.Version < 3 || h.DataFileRaw() {
		return false, nil
	}
	g := h.Geometry()
	gran := g.SubclusterSize()
	size := b.img.Size()
	end := off + n
	a := (off + gran - 1) / gran * gran
	z := end / gran * gran
	if end == size {
		z = (end + gran - 1) / gran * gran
	}
	hasBacking := h.BackingFile != ""
	// zeroInTop: the engine's writeZeroBytes skips what reads as zeros in this image itself.
	zeroInTop := func(e qcow2.Extent) bool {
		return (e.Kind == qcow2.KindZero && e.Depth == 0) || (e.Kind == qcow2.KindUnallocated && !hasBacking)
	}
	// partIsZero: the engine writes the partial-subcluster part [s, t) unless it reads as
	// zeros already.
	partIsZero := func(s, t uint64) (bool, error) {
		if s >= t {
			return true, nil
		}
		ext, err := b.img.Map(s, t-s)
		if err != nil {
			return false, err
		}
		for _, e := range ext {
			if !zeroInTop(e) {
				return false, nil
			}
		}
		return true, nil
	}
	if a >= z {
		return partIsZero(off, end)
	}
	if ok, err := partIsZero(off, a); !ok || err != nil {
		return false, err
	}
	if ok, err := partIsZero(z, end); !ok || err != nil {
		return false, err
	}
	if !g.ExtendedL2 {
		return true, nil
	}
	// Extended L2: a compressed cluster only partly inside [a, z) is written.
	ext, err := b.img.Map(a, min(z, end)-a)
	if err != nil {
		return false, err
	}
	cs := g.ClusterSize()
	for _, e := range ext {
		if e.Kind == qcow2.KindCompressed && e.Depth == 0 {
			if first := e.Start / cs * cs; first < a || first+cs > z {
				return false, nil
			}
		}
	}
	return true, nil
}
