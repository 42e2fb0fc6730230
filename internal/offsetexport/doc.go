// Package offsetexport serves the part of a server.Backend that starts at a byte offset: qemu-nbd's
// -o/--offset, which QEMU implements with a raw node above the image's format driver, so that
// it applies to the guest view of a qcow2 image as well as to a raw file
// (docs/qemu-nbd-fidelity.md).
//
// # Contract
//
// New(inner, off) exports inner's bytes [off, inner.Size()) at [0, Size()), where Size() is
// inner.Size()-off rounded up to 512 bytes, as QEMU's block layer rounds a node's length
// to whole sectors. An off past inner.Size() is refused with qemu-nbd's message.
//
// The rounded tail past inner's end reads as zeros and is a zero hole in block status.
// Writes, write-zeroes and trims that reach into it fail with ENOSPC and change nothing:
// qemu-nbd 7.2 aborts on an assertion there (and its block status loops forever), neither of
// which a server may copy.
//
// A Backend implements every optional server interface. Where inner lacks one it behaves as
// the server would without it: TRIM and CACHE do nothing, WRITE_ZEROES writes zeros (or fails
// with ENOTSUP when FAST_ZERO asks not to), block status says data, depth 1.
//
// # Concurrency
//
// A Backend adds no state to inner: it is as safe for concurrent use as inner is.
package offsetexport
