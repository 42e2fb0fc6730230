// Big-endian cursors for decoding and encoding on-disk structures without reflection.
package qcow2

import "encoding/binary"

// readBuf is a decoding cursor. Callers check the length before reading; reading past the
// end panics, which would be a bug in the caller's bounds check, not bad input.
type readBuf []byte

func (b *readBuf) u8() uint8 {
	v := (*b)[0]
	*b = (*b)[1:]
	return v
}

func (b *readBuf) u16() uint16 {
	v := binary.BigEndian.Uint16(*b)
	*b = (*b)[2:]
	return v
}

func (b *readBuf) u32() uint32 {
	v := binary.BigEndian.Uint32(*b)
	*b = (*b)[4:]
	return v
}

func (b *readBuf) u64() uint64 {
	v := binary.BigEndian.Uint64(*b)
	*b = (*b)[8:]
	return v
}

func (b *readBuf) bytes(n int) []byte {
	v := (*b)[:n:n]
	*b = (*b)[n:]
	return v
}

// writeBuf is an encoding cursor over a preallocated slice.
type writeBuf []byte

func (b *writeBuf) u8(v uint8) {
	(*b)[0] = v
	*b = (*b)[1:]
}

func (b *writeBuf) u32(v uint32) {
	binary.BigEndian.PutUint32(*b, v)
	*b = (*b)[4:]
}

func (b *writeBuf) u64(v uint64) {
	binary.BigEndian.PutUint64(*b, v)
	*b = (*b)[8:]
}

func (b *writeBuf) bytes(p []byte) {
	n := copy(*b, p)
	*b = (*b)[n:]
}

// pad8 rounds n up to a multiple of 8, the alignment of header extensions and snapshot entries.
func pad8(n uint64) uint64 { return (n + 7) &^ 7 }
