// Raw table entries (L1, L2, extended L2, reftable, refcount block) and what they mean.
package qcow2

import (
	"encoding/binary"
	"fmt"
)

// L1Entry is one raw entry of an L1 table.
type L1Entry uint64

// L2Offset is the host offset of the L2 table, 0 if none is allocated.
func (e L1Entry) L2Offset() HostOffset { return HostOffset(uint64(e) & l1OffsetMask) }

// Copied reports bit 63: the L2 table's refcount is exactly one, so it may be written in place.
func (e L1Entry) Copied() bool { return uint64(e)&entryCopied != 0 }

// Reserved returns the reserved bits, which must be zero.
func (e L1Entry) Reserved() uint64 { return uint64(e) & l1ReservedMask }

// MakeL1Entry builds an L1 entry pointing at an L2 table.
func MakeL1Entry(l2 HostOffset, copied bool) L1Entry {
	e := uint64(l2) & l1OffsetMask
	if copied {
		e |= entryCopied
	}
	return L1Entry(e)
}

// L2Entry is one raw standard L2 entry, or the first word of an extended one.
type L2Entry uint64

// Compressed reports bit 62.
func (e L2Entry) Compressed() bool { return uint64(e)&l2Compressed != 0 }

// Copied reports bit 63: the data cluster's refcount is exactly one.
func (e L2Entry) Copied() bool { return uint64(e)&entryCopied != 0 }

// Zero reports bit 0 of a standard descriptor (v3 without extended L2): reads as zeros.
func (e L2Entry) Zero() bool { return !e.Compressed() && uint64(e)&l2Zero != 0 }

// Offset is the host cluster offset of a standard descriptor.
func (e L2Entry) Offset() HostOffset { return HostOffset(uint64(e) & l2OffsetMask) }

// Reserved returns the reserved bits of a standard descriptor, which must be zero.
func (e L2Entry) Reserved() uint64 {
	if e.Compressed() {
		return 0
	}
	return uint64(e) & l2StdReservedMask
}

// CompressedRange decodes a compressed descriptor: "x = 62 - (cluster_bits - 8); Bit 0 - x-1:
// Host cluster offset ... byte offset, not cluster aligned; x - 61: Number of additional 512-byte
// sectors used for the compressed data, beyond the sector containing the offset". It returns the
// host byte offset and the number of bytes that may hold compressed data: from the offset to the
// end of the last sector counted.
func (e L2Entry) CompressedRange(g Geometry) (HostOffset, uint64) {
	x := 62 - (g.ClusterBits - 8)
	desc := uint64(e) &^ (l2Compressed | entryCopied)
	off := desc & (1<<x - 1)
	sectors := desc >> x
	end := (off &^ (compressedSectorSize - 1)) + (sectors+1)*compressedSectorSize
	return HostOffset(off), end - off
}

// MakeL2Entry builds a standard L2 entry.
func MakeL2Entry(host HostOffset, copied, zero bool) L2Entry {
	e := uint64(host) & l2OffsetMask
	if copied {
		e |= entryCopied
	}
	if zero {
		e |= l2Zero
	}
	return L2Entry(e)
}

// MakeCompressedL2Entry builds a compressed L2 entry for compressed data of n bytes at host
// byte offset off.
func MakeCompressedL2Entry(g Geometry, off HostOffset, n uint64) L2Entry {
	x := 62 - (g.ClusterBits - 8)
	first := uint64(off) / compressedSectorSize
	last := (uint64(off) + n - 1) / compressedSectorSize
	return L2Entry(l2Compressed | (last-first)<<x | uint64(off))
}

// SubclusterBitmap is the second word of an extended L2 entry: "Bit 0 - 31: Allocation status
// (one bit per subcluster) ... 32 - 63: Subcluster reads as zeros (one bit per subcluster)".
type SubclusterBitmap uint64

// Allocated returns the 32 allocation bits.
func (b SubclusterBitmap) Allocated() uint32 { return uint32(b) }

// ZeroBits returns the 32 reads-as-zero bits.
func (b SubclusterBitmap) ZeroBits() uint32 { return uint32(b >> 32) }

// MakeSubclusterBitmap combines allocation and zero bits.
func MakeSubclusterBitmap(alloc, zero uint32) SubclusterBitmap {
	return SubclusterBitmap(uint64(zero)<<32 | uint64(alloc))
}

// Kind classifies what a guest range maps to.
type Kind uint8

// Mapping kinds, what the read and write paths switch on.
const (
	// KindUnallocated: not allocated in this image; reads go to the backing file, or zeros.
	KindUnallocated Kind = iota
	// KindZero: reads as zeros without consulting the backing file.
	KindZero
	// KindData: data at a host offset, in the image file or the external data file.
	KindData
	// KindCompressed: compressed data at a host byte offset.
	KindCompressed
)

func (k Kind) String() string {
	switch k {
	case KindUnallocated:
		return "unallocated"
	case KindZero:
		return "zero"
	case KindData:
		return "data"
	case KindCompressed:
		return "compressed"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Mapping is the meaning of one L2 entry for one cluster, or one subcluster run.
type Mapping struct {
	Kind Kind
	// Host is the host offset for KindData and KindCompressed, and for a preallocated
	// KindZero cluster (0 otherwise).
	Host HostOffset
	// CompressedLen is the number of bytes at Host that may hold compressed data.
	CompressedLen uint64
	// Copied is the entry's COPIED flag.
	Copied bool
}

// RefTableEntry is one raw entry of the refcount table.
type RefTableEntry uint64

// Offset is the refcount block's host offset, 0 if none.
func (e RefTableEntry) Offset() HostOffset { return HostOffset(uint64(e) & reftableOffsetMask) }

// Reserved returns the reserved bits, which must be zero.
func (e RefTableEntry) Reserved() uint64 { return uint64(e) & reftableReservedMask }

// RefBlock is a refcount block's bytes viewed as refcount_bits-wide entries. "Refcount block
// entries are stored as [refcount_bits]-bit unsigned integers in big-endian order; if
// refcount_bits is less than 8, the ... least significant bits of each byte hold the first
// entry" (sub-byte widths count from the least significant bit first).
type RefBlock struct {
	Data  []byte
	Order uint32 // refcount_order
}

// Get returns the refcount at index i.
func (b RefBlock) Get(i RefBlockIndex) Refcount {
	switch b.Order {
	case 0, 1, 2:
		w := uint64(1) << b.Order
		bit := uint64(i) * w
		return Refcount(b.Data[bit/8]>>(bit%8)) & (1<<w - 1)
	case 3:
		return Refcount(b.Data[i])
	case 4:
		return Refcount(binary.BigEndian.Uint16(b.Data[i*2:]))
	case 5:
		return Refcount(binary.BigEndian.Uint32(b.Data[i*4:]))
	default:
		return Refcount(binary.BigEndian.Uint64(b.Data[i*8:]))
	}
}

// Set stores v at index i. v must fit the width; callers check against Geometry.MaxRefcount.
func (b RefBlock) Set(i RefBlockIndex, v Refcount) {
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
