// Byte layouts: big-endian cursors and the encoders/decoders of requests, reply headers and
// option replies.
package server

import "encoding/binary"

var be = binary.BigEndian

// readBuf is a big-endian cursor over a byte slice; callers check the length first.
type readBuf []byte

func (b *readBuf) u16() uint16 { v := be.Uint16(*b); *b = (*b)[2:]; return v }
func (b *readBuf) u32() uint32 { v := be.Uint32(*b); *b = (*b)[4:]; return v }
func (b *readBuf) u64() uint64 { v := be.Uint64(*b); *b = (*b)[8:]; return v }

// writeBuf appends big-endian values to a byte slice.
type writeBuf []byte

func (b writeBuf) u16(v uint16) writeBuf { return be.AppendUint16(b, v) }
func (b writeBuf) u32(v uint32) writeBuf { return be.AppendUint32(b, v) }
func (b writeBuf) u64(v uint64) writeBuf { return be.AppendUint64(b, v) }
func (b writeBuf) str(s string) writeBuf { return append(b, s...) }

// Request is one transmission request header as decoded from the wire.
//
//	compact (28 bytes):  magic u32 | flags u16 | type u16 | cookie u64 | offset u64 | length u32
//	extended (32 bytes): magic u32 | flags u16 | type u16 | cookie u64 | offset u64 | length u64
type Request struct {
	Flags  CmdFlags
	Type   Cmd
	Cookie uint64
	Offset uint64
	// Length is the effect length, or the payload length for WRITE (and for any command
	// carrying NBD_CMD_FLAG_PAYLOAD_LEN with extended headers).
	Length uint64
}

// requestLen is the header size for the negotiated header style.
func requestLen(extended bool) int {
	if extended {
		return extendedRequestLen
	}
	return compactRequestLen
}

// decodeRequest parses a request header of requestLen(extended) bytes; ok is false when the
// magic is wrong (a protocol violation).
func decodeRequest(hdr []byte, extended bool) (r Request, ok bool) {
	b := readBuf(hdr)
	magic := b.u32()
	r.Flags = CmdFlags(b.u16())
	r.Type = Cmd(b.u16())
	r.Cookie = b.u64()
	r.Offset = b.u64()
	if extended {
		r.Length = b.u64()
		return r, magic == MagicExtendedRequest
	}
	r.Length = uint64(b.u32())
	return r, magic == MagicRequest
}

// AppendRequest appends r's header in the given style (used by clients, tests and fuzz seeds).
// In the compact style the length is truncated to 32 bits.
func AppendRequest(b []byte, r Request, extended bool) []byte {
	w := writeBuf(b)
	if extended {
		w = w.u32(MagicExtendedRequest)
	} else {
		w = w.u32(MagicRequest)
	}
	w = w.u16(uint16(r.Flags)).u16(uint16(r.Type)).u64(r.Cookie).u64(r.Offset)
	if extended {
		return w.u64(r.Length)
	}
	return w.u32(uint32(r.Length))
}

// appendSimpleReply appends "magic u32 | error u32 | cookie u64".
func appendSimpleReply(b []byte, errno Errno, cookie uint64) []byte {
	return writeBuf(b).u32(MagicSimpleReply).u32(uint32(errno)).u64(cookie)
}

// appendChunkHeader appends a structured (20-byte) or extended (32-byte) chunk header.
//
//	structured: magic u32 | flags u16 | type u16 | cookie u64 | length u32
//	extended:   magic u32 | flags u16 | type u16 | cookie u64 | offset u64 | length u64
//
// "The extended reply has an additional field *offset* which MUST match the *offset* of the
// client's request".
func appendChunkHeader(b []byte, extended bool, flags ReplyFlags, typ ReplyType, cookie, reqOffset, length uint64) []byte {
	w := writeBuf(b)
	if extended {
		return w.u32(MagicExtendedReply).u16(uint16(flags)).u16(uint16(typ)).u64(cookie).
			u64(reqOffset).u64(length)
	}
	return w.u32(MagicStructuredReply).u16(uint16(flags)).u16(uint16(typ)).u64(cookie).
		u32(uint32(length))
}

// appendOptReply appends an option reply header: "0x3e889045565a9 | option | reply type |
// length".
func appendOptReply(b []byte, opt Opt, rep Rep, length uint32) []byte {
	return writeBuf(b).u64(MagicOptReply).u32(uint32(opt)).u32(uint32(rep)).u32(length)
}
