// A small NBD client for tests: raw option and request helpers plus a reply parser for
// simple, structured and extended replies that reassembles out-of-order chunks.
package server

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

type tclient struct {
	t    testing.TB
	nc   net.Conn
	br   *bufio.Reader
	mode replyMode

	size  uint64
	flags TransmissionFlags
	metas map[uint32]string // SET_META_CONTEXT ids

	sentMu  sync.Mutex         // sent is shared by a sending and a receiving goroutine
	sent    map[uint64]Request // requests awaiting replies, by cookie
	partial map[uint64]*treply // structured replies still missing DONE
	cookie  uint64
}

type optReply struct {
	opt  Opt
	rep  Rep
	data []byte
}

type tchunk struct {
	flags  ReplyFlags
	typ    ReplyType
	offset uint64 // extended header offset field
	data   []byte
}

type treply struct {
	cookie uint64
	simple bool
	errno  Errno // simple errno, or the first error chunk's
	msg    string
	errOff uint64 // ERROR_OFFSET offset
	data   []byte // READ: reassembled content (holes as zeros)
	chunks []tchunk
	holes  int // OFFSET_HOLE chunks seen
	datas  int // OFFSET_DATA chunks seen
	status map[uint32][]Extent
}

// newClient reads the greeting on nc and returns a client in the option phase.
func newClient(t testing.TB, nc net.Conn) *tclient {
	t.Helper()
	c := &tclient{t: t, nc: nc, br: bufio.NewReader(nc), sent: map[uint64]Request{},
		partial: map[uint64]*treply{}, metas: map[uint32]string{}}
	// A bound on a hung test, not a timing assertion: one connection may carry several
	// 32 MiB payloads under the race detector on a loaded machine (20 s was seen to expire).
	nc.SetDeadline(time.Now().Add(2 * time.Minute))
	var g [18]byte
	if _, err := io.ReadFull(c.br, g[:]); err != nil {
		t.Fatalf("greeting: %v", err)
	}
	if be.Uint64(g[:]) != MagicNBD || be.Uint64(g[8:]) != MagicIHaveOpt {
		t.Fatalf("bad greeting %x", g)
	}
	if HandshakeFlags(be.Uint16(g[16:])) != FlagFixedNewstyle|FlagNoZeroes {
		t.Fatalf("handshake flags %#x", be.Uint16(g[16:]))
	}
	return c
}

func (c *tclient) write(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *tclient) sendFlags(f ClientFlags) { c.write(be.AppendUint32(nil, uint32(f))) }

func (c *tclient) sendOpt(opt Opt, payload []byte) {
	b := writeBuf(nil).u64(MagicIHaveOpt).u32(uint32(opt)).u32(uint32(len(payload)))
	c.write(append(b, payload...))
}

func (c *tclient) readOpt() optReply {
	c.t.Helper()
	var h [optReplyHeaderLen]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		c.t.Fatalf("option reply: %v", err)
	}
	r := readBuf(h[:])
	if m := r.u64(); m != MagicOptReply {
		c.t.Fatalf("option reply magic %#x", m)
	}
	o := optReply{opt: Opt(r.u32()), rep: Rep(r.u32())}
	o.data = make([]byte, r.u32())
	if _, err := io.ReadFull(c.br, o.data); err != nil {
		c.t.Fatalf("option reply payload: %v", err)
	}
	return o
}

// opt sends an option and collects replies up to the final one.
func (c *tclient) opt(opt Opt, payload []byte) []optReply {
	c.t.Helper()
	c.sendOpt(opt, payload)
	var out []optReply
	for {
		r := c.readOpt()
		if r.opt != opt {
			c.t.Fatalf("reply for %v to %v", r.opt, opt)
		}
		out = append(out, r)
		if r.rep == RepAck || r.rep.IsError() {
			return out
		}
	}
}

// wantRep checks the final reply type of an option exchange.
func (c *tclient) wantRep(rs []optReply, want Rep) {
	c.t.Helper()
	if got := rs[len(rs)-1].rep; got != want {
		c.t.Fatalf("final reply %v (%q), want %v", got, rs[len(rs)-1].data, want)
	}
}

func infoPayload(name string, infos ...Info) []byte {
	b := writeBuf(nil).u32(uint32(len(name))).str(name).u16(uint16(len(infos)))
	for _, i := range infos {
		b = b.u16(uint16(i))
	}
	return b
}

func metaPayload(name string, queries ...string) []byte {
	b := writeBuf(nil).u32(uint32(len(name))).str(name).u32(uint32(len(queries)))
	for _, q := range queries {
		b = b.u32(uint32(len(q))).str(q)
	}
	return b
}

// parseInfos decodes NBD_REP_INFO replies.
func parseInfos(rs []optReply) map[Info][]byte {
	m := map[Info][]byte{}
	for _, r := range rs {
		if r.rep == RepInfo {
			m[Info(be.Uint16(r.data))] = r.data[2:]
		}
	}
	return m
}

// clientOpts describes a handshake for connect.
type clientOpts struct {
	export     string
	structured bool
	extended   bool
	metas      []string // SET_META_CONTEXT queries (needs structured or extended)
	exportName bool     // use NBD_OPT_EXPORT_NAME instead of GO
	flags      ClientFlags
}

// connect dials addr and negotiates up to transmission.
func connect(t testing.TB, network, addr string, o clientOpts) *tclient {
	t.Helper()
	nc, err := net.Dial(network, addr)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	return negotiateClient(t, nc, o)
}

func negotiateClient(t testing.TB, nc net.Conn, o clientOpts) *tclient {
	t.Helper()
	c := newClient(t, nc)
	if o.flags == 0 {
		o.flags = FlagCFixedNewstyle | FlagCNoZeroes
	}
	c.sendFlags(o.flags)
	if o.structured {
		c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
		c.mode = modeStructured
	}
	if o.extended {
		c.wantRep(c.opt(OptExtendedHeaders, nil), RepAck)
		c.mode = modeExtended
	}
	if len(o.metas) > 0 {
		rs := c.opt(OptSetMetaContext, metaPayload(o.export, o.metas...))
		c.wantRep(rs, RepAck)
		for _, r := range rs {
			if r.rep == RepMetaContext {
				c.metas[be.Uint32(r.data)] = string(r.data[4:])
			}
		}
	}
	if o.exportName {
		c.sendOpt(OptExportName, []byte(o.export))
		var b [10]byte
		if _, err := io.ReadFull(c.br, b[:]); err != nil {
			t.Fatalf("EXPORT_NAME reply: %v", err)
		}
		c.size, c.flags = be.Uint64(b[:]), TransmissionFlags(be.Uint16(b[8:]))
		if o.flags&FlagCNoZeroes == 0 {
			if _, err := io.CopyN(io.Discard, c.br, exportNamePadding); err != nil {
				t.Fatalf("padding: %v", err)
			}
		}
		return c
	}
	rs := c.opt(OptGo, infoPayload(o.export, InfoBlockSize))
	c.wantRep(rs, RepAck)
	ex := parseInfos(rs)[InfoExport]
	c.size, c.flags = be.Uint64(ex), TransmissionFlags(be.Uint16(ex[8:]))
	return c
}

// send writes a request (and payload); it assigns a cookie when r.Cookie is 0.
func (c *tclient) send(r Request, payload []byte) uint64 {
	c.t.Helper()
	if r.Cookie == 0 {
		c.cookie++
		r.Cookie = c.cookie
	}
	ext := c.mode == modeExtended
	if ext && payload != nil {
		r.Flags |= CmdFlagPayloadLen
		r.Length = uint64(len(payload))
	} else if !ext && r.Type == CmdWrite && payload != nil {
		r.Length = uint64(len(payload))
	}
	c.setSent(r)
	c.write(append(AppendRequest(nil, r, ext), payload...))
	return r.Cookie
}

// recv returns the next complete reply.
func (c *tclient) recv() *treply {
	c.t.Helper()
	r, err := c.tryRecv()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	return r
}

func (c *tclient) tryRecv() (*treply, error) {
	for {
		var m [4]byte
		if _, err := io.ReadFull(c.br, m[:]); err != nil {
			return nil, err
		}
		switch magic := be.Uint32(m[:]); magic {
		case MagicSimpleReply:
			if c.mode == modeExtended {
				return nil, fmt.Errorf("simple reply with extended headers")
			}
			var h [simpleReplyLen - 4]byte
			if _, err := io.ReadFull(c.br, h[:]); err != nil {
				return nil, err
			}
			r := &treply{simple: true, errno: Errno(be.Uint32(h[:])), cookie: be.Uint64(h[4:])}
			req, ok := c.getSent(r.cookie)
			if !ok {
				return nil, fmt.Errorf("reply for unknown cookie %d", r.cookie)
			}
			if req.Type == CmdRead && c.mode == modeStructured {
				return nil, fmt.Errorf("simple reply to READ with structured replies")
			}
			c.delSent(r.cookie)
			if req.Type == CmdRead && r.errno == 0 {
				r.data = make([]byte, req.Length)
				if _, err := io.ReadFull(c.br, r.data); err != nil {
					return nil, err
				}
			}
			return r, nil
		case MagicStructuredReply, MagicExtendedReply:
			ext := magic == MagicExtendedReply
			if ext != (c.mode == modeExtended) || c.mode == modeSimple {
				return nil, fmt.Errorf("chunk magic %#x in mode %v", magic, c.mode)
			}
			n := structuredChunkLen - 4
			if ext {
				n = extendedChunkLen - 4
			}
			h := make([]byte, n)
			if _, err := io.ReadFull(c.br, h); err != nil {
				return nil, err
			}
			b := readBuf(h)
			ch := tchunk{flags: ReplyFlags(b.u16()), typ: ReplyType(b.u16())}
			cookie := b.u64()
			var length uint64
			if ext {
				ch.offset = b.u64()
				length = b.u64()
			} else {
				length = uint64(b.u32())
			}
			if length > 64<<20 {
				return nil, fmt.Errorf("chunk length %d", length)
			}
			ch.data = make([]byte, length)
			if _, err := io.ReadFull(c.br, ch.data); err != nil {
				return nil, err
			}
			req, ok := c.getSent(cookie)
			if !ok {
				return nil, fmt.Errorf("chunk for unknown cookie %d", cookie)
			}
			if ext && ch.offset != req.Offset {
				return nil, fmt.Errorf("extended chunk offset %d, request offset %d", ch.offset, req.Offset)
			}
			r := c.partial[cookie]
			if r == nil {
				r = &treply{cookie: cookie, status: map[uint32][]Extent{}}
				if req.Type == CmdRead && req.Length <= MaxPayload {
					r.data = make([]byte, req.Length)
				}
				c.partial[cookie] = r
			}
			if err := r.add(ch, req, ext); err != nil {
				return nil, err
			}
			if ch.flags&ReplyFlagDone != 0 {
				delete(c.partial, cookie)
				c.delSent(cookie)
				return r, nil
			}
		default:
			return nil, fmt.Errorf("reply magic %#x", magic)
		}
	}
}

// add folds one chunk into the reply, checking the layout rules a client would.
func (r *treply) add(ch tchunk, req Request, ext bool) error {
	r.chunks = append(r.chunks, ch)
	d := readBuf(ch.data)
	switch ch.typ {
	case ReplyTypeNone:
		if len(d) != 0 || ch.flags&ReplyFlagDone == 0 {
			return fmt.Errorf("bad NONE chunk")
		}
	case ReplyTypeOffsetData:
		if len(d) < 9 {
			return fmt.Errorf("OFFSET_DATA of %d bytes", len(d))
		}
		off := d.u64()
		if off < req.Offset || off+uint64(len(d)) > req.Offset+req.Length || r.data == nil {
			return fmt.Errorf("OFFSET_DATA outside the request")
		}
		copy(r.data[off-req.Offset:], d)
		r.datas++
	case ReplyTypeOffsetHole:
		if len(d) != 12 {
			return fmt.Errorf("OFFSET_HOLE of %d bytes", len(d))
		}
		off, n := d.u64(), uint64(d.u32())
		if n == 0 || off < req.Offset || off+n > req.Offset+req.Length || r.data == nil {
			return fmt.Errorf("OFFSET_HOLE outside the request")
		}
		clear(r.data[off-req.Offset : off-req.Offset+n])
		r.holes++
	case ReplyTypeBlockStatus, ReplyTypeBlockStatusExt:
		if (ch.typ == ReplyTypeBlockStatusExt) != ext {
			return fmt.Errorf("%v with extended=%v", ch.typ, ext)
		}
		if ch.typ == ReplyTypeBlockStatus {
			if len(d) < 12 || (len(d)-4)%8 != 0 {
				return fmt.Errorf("BLOCK_STATUS of %d bytes", len(d))
			}
			id := d.u32()
			for len(d) > 0 {
				r.status[id] = append(r.status[id], Extent{Length: uint64(d.u32()), Flags: d.u32()})
			}
		} else {
			if len(d) < 24 || (len(d)-8)%16 != 0 {
				return fmt.Errorf("BLOCK_STATUS_EXT of %d bytes", len(d))
			}
			id, count := d.u32(), d.u32()
			if count != 0 && int(count) != len(d)/16 {
				return fmt.Errorf("BLOCK_STATUS_EXT count %d for %d bytes", count, len(d))
			}
			for len(d) > 0 {
				l, f := d.u64(), d.u64()
				if f>>32 != 0 {
					return fmt.Errorf("64-bit status %#x", f)
				}
				r.status[id] = append(r.status[id], Extent{Length: l, Flags: uint32(f)})
			}
		}
		for _, e := range r.status[binary.BigEndian.Uint32(ch.data)] {
			if e.Length == 0 {
				return fmt.Errorf("zero-length extent")
			}
		}
	case ReplyTypeError, ReplyTypeErrorOffset:
		if len(d) < 6 {
			return fmt.Errorf("error chunk of %d bytes", len(d))
		}
		e, ml := Errno(d.u32()), int(d.u16())
		if e == 0 || ml > len(d) || ml > MaxStringLen {
			return fmt.Errorf("bad error chunk")
		}
		if r.errno == 0 {
			r.errno = e
			r.msg = string(d[:ml])
		}
		d = d[ml:]
		if ch.typ == ReplyTypeErrorOffset {
			if len(d) != 8 {
				return fmt.Errorf("ERROR_OFFSET tail of %d bytes", len(d))
			}
			r.errOff = d.u64()
		}
	default:
		return fmt.Errorf("unknown chunk type %v", ch.typ)
	}
	return nil
}

// do sends one request and waits for its reply (no other request may be in flight).
func (c *tclient) do(r Request, payload []byte) *treply {
	c.t.Helper()
	cookie := c.send(r, payload)
	rep := c.recv()
	if rep.cookie != cookie {
		c.t.Fatalf("reply cookie %d, want %d", rep.cookie, cookie)
	}
	return rep
}

func (c *tclient) read(off, n uint64, flags CmdFlags) *treply {
	return c.do(Request{Type: CmdRead, Offset: off, Length: n, Flags: flags}, nil)
}

func (c *tclient) writeAt(off uint64, p []byte, flags CmdFlags) *treply {
	return c.do(Request{Type: CmdWrite, Offset: off, Flags: flags}, p)
}

// wantErrno checks a reply's errno.
func (c *tclient) wantErrno(r *treply, want Errno) {
	c.t.Helper()
	if r.errno != want {
		c.t.Fatalf("errno %v (%q), want %v", r.errno, r.msg, want)
	}
}

// disc sends NBD_CMD_DISC and waits for the server to close.
func (c *tclient) disc() {
	c.t.Helper()
	c.send(Request{Type: CmdDisc}, nil)
	c.expectClosed()
}

// expectClosed waits for EOF (or a reset) from the server.
// The 30 s wait bounds a hang on a loaded machine; it is no timing assertion.
func (c *tclient) expectClosed() {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, c.br); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			c.t.Fatalf("server did not close the connection")
		}
	}
}

func (c *tclient) setSent(r Request) {
	c.sentMu.Lock()
	defer c.sentMu.Unlock()
	c.sent[r.Cookie] = r
}

func (c *tclient) getSent(cookie uint64) (Request, bool) {
	c.sentMu.Lock()
	defer c.sentMu.Unlock()
	r, ok := c.sent[cookie]
	return r, ok
}

func (c *tclient) delSent(cookie uint64) {
	c.sentMu.Lock()
	defer c.sentMu.Unlock()
	delete(c.sent, cookie)
}
