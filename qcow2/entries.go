// Raw table entries (L1, L2, extended L2, reftable, refcount block) and what they mean.
package qcow2

import (
	"encoding/binary"
	"fmt"
)

// l1Entry is one raw entry of an L1 table.
type l1Entry uint64

// l2Offset is the host offset of the L2 table, 0 if none is allocated.
func (e l1Entry) l2Offset() HostOffset { return HostOffset(uint64(e) & l1OffsetMask) }

// copied reports bit 63: the L2 table's refcount is exactly one, so it may be written in place.
func (e l1Entry) copied() bool { return uint64(e)&entryCopied != 0 }

// reserved returns the reserved bits, which must be zero.
func (e l1Entry) reserved() uint64 { return uint64(e) & l1ReservedMask }

// makeL1Entry builds an L1 entry pointing at an L2 table.
func makeL1Entry(l2 HostOffset, copied bool) l1Entry {
	e := uint64(l2) & l1OffsetMask
	if copied {
		e |= entryCopied
	}
	return l1Entry(e)
}

// l2Entry is one raw standard L2 entry, or the first word of an extended one.
type l2Entry uint64

// Compressed reports bit 62.
func (e l2Entry) Compressed() bool { return uint64(e)&l2Compressed != 0 }

// copied reports bit 63: the data cluster's refcount is exactly one.
func (e l2Entry) copied() bool { return uint64(e)&entryCopied != 0 }

// Zero reports bit 0 of a standard descriptor (v3 without extended L2): reads as zeros.
func (e l2Entry) Zero() bool { return !e.Compressed() && uint64(e)&l2Zero != 0 }

// Offset is the host cluster offset of a standard descriptor.
func (e l2Entry) Offset() HostOffset { return HostOffset(uint64(e) & l2OffsetMask) }

// reserved returns the reserved bits of a standard descriptor, which must be zero.
func (e l2Entry) reserved() uint64 {
	if e.Compressed() {
		return 0
	}
	return uint64(e) & l2StdReservedMask
}

// compressedRange decodes a compressed descriptor: "x = 62 - (cluster_bits - 8); Bit 0 - x-1:
// Host cluster offset ... byte offset, not cluster aligned; x - 61: Number of additional 512-byte
// sectors used for the compressed data, beyond the sector containing the offset". It returns the
// host byte offset and the number of bytes that may hold compressed data: from the offset to the
// end of the last sector counted.
func (e l2Entry) compressedRange(g Geometry) (HostOffset, uint64) {
	x := 62 - (g.ClusterBits - 8)
	desc := uint64(e) &^ (l2Compressed | entryCopied)
	off := desc & (1<<x - 1)
	sectors := desc >> x
	end := (off &^ (compressedSectorSize - 1)) + (sectors+1)*compressedSectorSize
	return HostOffset(off), end - off
}

// makeL2Entry builds a standard L2 entry.
func makeL2Entry(host HostOffset, copied, zero bool) l2Entry {
	e := uint64(host) & l2OffsetMask
	if copied {
		e |= entryCopied
	}
	if zero {
		e |= l2Zero
	}
	return l2Entry(e)
}

// makeCompressedL2Entry builds a compressed L2 entry for compressed data of n bytes at host
// byte offset off.
func makeCompressedL2Entry(g Geometry, off HostOffset, n uint64) l2Entry {
	x := 62 - (g.ClusterBits - 8)
	first := uint64(off) / compressedSectorSize
	last := (uint64(off) + n - 1) / compressedSectorSize
	return l2Entry(l2Compressed | (last-first)<<x | uint64(off))
}

// subclusterBitmap is the second word of an extended L2 entry: "Bit 0 - 31: Allocation status
// (one bit per subcluster) ... 32 - 63: Subcluster reads as zeros (one bit per subcluster)".
type subclusterBitmap uint64

// Allocated returns the 32 allocation bits.
func (b subclusterBitmap) Allocated() uint32 { return uint32(b) }

// zeroBits returns the 32 reads-as-zero bits.
func (b subclusterBitmap) zeroBits() uint32 { return uint32(b >> 32) }

// makeSubclusterBitmap combines allocation and zero bits.
func makeSubclusterBitmap(alloc, zero uint32) subclusterBitmap {
	return subclusterBitmap(uint64(zero)<<32 | uint64(alloc))
}

// Kind classifies what a guest range maps to.
type Kind uint8

// Mapping kinds, what the read and write paths switch on.
const (
	// kindUnallocated: not allocated in this image; reads go to the backing file, or zeros.
	kindUnallocated Kind = iota
	// kindZero: reads as zeros without consulting the backing file.
	kindZero
	// kindData: data at a host offset, in the image file or the external data file.
	kindData
	// kindCompressed: compressed data at a host byte offset.
	kindCompressed
)

func (k Kind) String() string {
	switch k {
	case kindUnallocated:
		return "unallocated"
	case kindZero:
		return "zero"
	case kindData:
		return "data"
	case kindCompressed:
		return "compressed"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// refTableEntry is one raw entry of the refcount table.
type refTableEntry uint64

// Offset is the refcount block's host offset, 0 if none.
func (e refTableEntry) Offset() HostOffset { return HostOffset(uint64(e) & reftableOffsetMask) }

// reserved returns the reserved bits, which must be zero.
func (e refTableEntry) reserved() uint64 { return uint64(e) & reftableReservedMask }

// RefBlock is a refcount block's bytes viewed as refcount_bits-wide entries. "Refcount block
// entries are stored as [refcount_bits]-bit unsigned integers in big-endian order; if
// refcount_bits is less than 8, the ... least significant bits of each byte hold the first
// entry" (sub-byte widths count from the least significant bit first).
type RefBlock struct {
	Data  []byte
	Order uint32 // refcount_order
}

// Get returns the refcount at index i.
func (b RefBlock) Get(i refBlockIndex) refcount {
	switch b.Order {
	case 0, 1, 2:
		w := uint64(1) << b.Order
		bit := uint64(i) * w
		return refcount(b.Data[bit/8]>>(bit%8)) & (1<<w - 1)
	case 3:
		return refcount(b.Data[i])
	case 4:
		return refcount(binary.BigEndian.Uint16(b.Data[i*2:]))
	case 5:
		return refcount(binary.BigEndian.Uint32(b.Data[i*4:]))
	default:
		return refcount(binary.BigEndian.Uint64(b.Data[i*8:]))
	}
}

// Set stores v at index i. v must fit the width; callers check against Geometry.MaxRefcount.
func (b RefBlock) Set(i refBlockIndex, v refcount) {
	switch b.Order {
	case 0, 1, 2:
		w := uint64(1) << b.Order
		bit := uint64(i) * w
		mask := byte(1<<w-1) << (bit % 8)
		b.Data[bit/8] = b.Data[bit/8]&^mask | byte(v)<<(bit%8)&mask
	case 3:
		b.Data[i] = byte(v)
	case 4:
		binary.BigEndian.PutUint16(b.Data[i*2:], uint16(v))
	case 5:
		binary.BigEndian.PutUint32(b.Data[i*4:], uint32(v))
	default:
		binary.BigEndian.PutUint64(b.Data[i*8:], uint64(v))
	}
}
