// Changing the refcount width of a qcow2 image (qnbd-img amend -o refcount_bits=N).
package imgfmt

import "math/bits"

// ChangeRefcountBits rebuilds a qcow2 image's refcount structures with entries of width bits
// (a power of two, 1 to 64), crash-safe (see the engine's amend_refcount.go). A refusal in
// QEMU's words is a *qcow2.AmendError. status (nil for none) gets QEMU's progress steps.
func ChangeRefcountBits(d Disk, width uint64, status func(done, total int64)) error {
	img, err := engineOf(d)
	if err != nil {
		return err
	}
	return img.ChangeRefcountOrder(uint32(bits.TrailingZeros64(width)), status)
}
