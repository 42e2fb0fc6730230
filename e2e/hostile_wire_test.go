// A minimal raw-socket NBD client for the hostile-client tests: fixed-newstyle greeting,
// options and their replies, requests in compact or extended form, and simple, structured or
// extended replies read back whole. It sends exactly what a test asks for, valid or not.
package e2e

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	nbd "github.com/qnbd/qnbd/server"
)

var wbe = binary.BigEndian

// wireMode is the reply style a raw connection negotiated.
type wireMode uint8

const (
	wireSimple wireMode = iota
	wireStructured
	wireExtended
)

// wireTimeout bounds every blocking read or write of a raw connection. It is a bound on a
// hang, not a timing assertion, and it is shorter than server A's handshake limit: a
// connection A closes before it passed was closed by A's own checks, not by the limit.
const wireTimeout = 30 * time.Second

// rawConn is one raw client connection. Tests use it from one goroutine.
type rawConn struct {
	t      *testing.T
	nc     net.Conn
	br     *bufio.Reader
	hflags nbd.HandshakeFlags
	mode   wireMode
	size   uint64
	tflags nbd.TransmissionFlags
	// pending holds the requests sent and not yet answered, by cookie, oldest first.
	pending map[uint64][]nbd.Request
	cookie  uint64
}

// dialRaw connects to network/addr and reads the greeting, which must be fixed newstyle.
func dialRaw(t *testing.T, network, addr string) *rawConn {
	t.Helper()
	c := dialQuiet(t, network, addr)
	var g [18]byte
	c.readFull(g[:])
	if wbe.Uint64(g[:8]) != nbd.MagicNBD || wbe.Uint64(g[8:16]) != nbd.MagicIHaveOpt {
		t.Fatalf("greeting magics %x", g[:16])
	}
	c.hflags = nbd.HandshakeFlags(wbe.Uint16(g[16:]))
	if c.hflags&nbd.FlagFixedNewstyle == 0 {
		t.Fatalf("greeting flags %#x lack FIXED_NEWSTYLE", c.hflags)
	}
	return c
}

// dialQuiet connects without reading anything; the connection closes at the end of the test.
func dialQuiet(t *testing.T, network, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout(network, addr, wireTimeout)
	if err != nil {
		t.Fatalf("dial %s %s: %v", network, addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc, br: bufio.NewReaderSize(nc, 64<<10), pending: map[uint64][]nbd.Request{}}
}

func (c *rawConn) readFull(p []byte) {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(wireTimeout))
	if _, err := io.ReadFull(c.br, p); err != nil {
		c.t.Fatalf("read %d bytes: %v", len(p), err)
	}
}

// write sends b whole or fails the test.
func (c *rawConn) write(b []byte) {
	c.t.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(wireTimeout))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write %d bytes: %v", len(b), err)
	}
}

// closeWrite half-closes the connection (TCP or Unix).
func (c *rawConn) closeWrite() {
	c.t.Helper()
	cw, ok := c.nc.(interface{ CloseWrite() error })
	if !ok {
		c.t.Fatalf("%T cannot half-close", c.nc)
	}
	if err := cw.CloseWrite(); err != nil {
		c.t.Fatalf("half-close: %v", err)
	}
}

// expectClosed requires the server to close the connection within wireTimeout, and returns
// whatever it sent before closing. A reset counts as a close.
func (c *rawConn) expectClosed() []byte {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(wireTimeout))
	b, err := io.ReadAll(c.br)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("connection not closed by the server: %v (after %d bytes)", err, len(b))
	}
	return b
}

// sendFlags answers the greeting with client flags f.
func (c *rawConn) sendFlags(f nbd.ClientFlags) {
	c.t.Helper()
	c.write(wbe.AppendUint32(nil, uint32(f)))
}

// optHeader is "IHAVEOPT | option u32 | length u32".
func optHeader(opt nbd.Opt, length uint32) []byte {
	b := wbe.AppendUint64(nil, nbd.MagicIHaveOpt)
	b = wbe.AppendUint32(b, uint32(opt))
	return wbe.AppendUint32(b, length)
}

// sendOpt sends one option with its payload.
func (c *rawConn) sendOpt(opt nbd.Opt, payload []byte) {
	c.t.Helper()
	c.write(append(optHeader(opt, uint32(len(payload))), payload...))
}

// optReply is one option reply.
type optReply struct {
	opt  nbd.Opt
	rep  nbd.Rep
	data []byte
}

// readOptReply reads one option reply, checking its magic.
func (c *rawConn) readOptReply() optReply {
	c.t.Helper()
	var h [20]byte
	c.readFull(h[:])
	if m := wbe.Uint64(h[:8]); m != nbd.MagicOptReply {
		c.t.Fatalf("option reply magic %#x", m)
	}
	r := optReply{opt: nbd.Opt(wbe.Uint32(h[8:])), rep: nbd.Rep(wbe.Uint32(h[12:]))}
	n := wbe.Uint32(h[16:])
	if n > 1<<20 {
		c.t.Fatalf("option reply of %d bytes", n)
	}
	r.data = make([]byte, n)
	c.readFull(r.data)
	return r
}

// readOptReplies reads the replies to one option up to its final one (ACK or an error).
func (c *rawConn) readOptReplies(opt nbd.Opt) []optReply {
	c.t.Helper()
	var rs []optReply
	for {
		r := c.readOptReply()
		if r.opt != opt {
			c.t.Fatalf("reply for %v while waiting for %v", r.opt, opt)
		}
		rs = append(rs, r)
		if r.rep == nbd.RepAck || r.rep.IsError() {
			return rs
		}
	}
}

// opt sends an option and returns its replies.
func (c *rawConn) opt(opt nbd.Opt, payload []byte) []optReply {
	c.t.Helper()
	c.sendOpt(opt, payload)
	return c.readOptReplies(opt)
}

// wantRep requires the final reply of rs to be want.
func (c *rawConn) wantRep(rs []optReply, want nbd.Rep) {
	c.t.Helper()
	if got := rs[len(rs)-1]; got.rep != want {
		c.t.Fatalf("%v: reply %v (%q), want %v", got.opt, got.rep, got.data, want)
	}
}

// infoPayload is an INFO/GO payload: name length, name, request count, requests.
func infoPayload(name string, infos ...nbd.Info) []byte {
	b := wbe.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = wbe.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = wbe.AppendUint16(b, uint16(i))
	}
	return b
}

// metaPayload is a LIST/SET_META_CONTEXT payload: export name, query count, queries.
func metaPayload(name string, queries ...string) []byte {
	b := wbe.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = wbe.AppendUint32(b, uint32(len(queries)))
	for _, q := range queries {
		b = wbe.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// infos maps the NBD_REP_INFO replies of rs by type.
func infos(rs []optReply) map[nbd.Info][]byte {
	m := map[nbd.Info][]byte{}
	for _, r := range rs {
		if r.rep == nbd.RepInfo && len(r.data) >= 2 {
			m[nbd.Info(wbe.Uint16(r.data))] = r.data[2:]
		}
	}
	return m
}

// enter sends GO for export name and requires NBD_REP_ACK; it records the size and flags.
func (c *rawConn) enter(name string) []optReply {
	c.t.Helper()
	rs := c.opt(nbd.OptGo, infoPayload(name, nbd.InfoBlockSize))
	c.wantRep(rs, nbd.RepAck)
	ex := infos(rs)[nbd.InfoExport]
	if len(ex) != 10 {
		c.t.Fatalf("NBD_INFO_EXPORT of %d bytes", len(ex))
	}
	c.size, c.tflags = wbe.Uint64(ex), nbd.TransmissionFlags(wbe.Uint16(ex[8:]))
	return rs
}

// negotiate runs a well-formed handshake in the given mode up to transmission on export
// name, with the given metadata contexts (structured or extended modes only).
func (c *rawConn) negotiate(mode wireMode, name string, metas ...string) {
	c.t.Helper()
	c.sendFlags(nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes)
	switch mode {
	case wireStructured:
		c.wantRep(c.opt(nbd.OptStructuredReply, nil), nbd.RepAck)
	case wireExtended:
		c.wantRep(c.opt(nbd.OptExtendedHeaders, nil), nbd.RepAck)
	}
	c.mode = mode
	if len(metas) > 0 {
		c.wantRep(c.opt(nbd.OptSetMetaContext, metaPayload(name, metas...)), nbd.RepAck)
	}
	c.enter(name)
}

// send writes one request header (in the negotiated style) followed by payload. The caller
// sets Length; the cookie is recorded so that recv knows what a simple reply carries.
func (c *rawConn) send(r nbd.Request, payload []byte) {
	c.t.Helper()
	c.pending[r.Cookie] = append(c.pending[r.Cookie], r)
	c.write(append(nbd.AppendRequest(nil, r, c.mode == wireExtended), payload...))
}

// nextCookie is a fresh cookie.
func (c *rawConn) nextCookie() uint64 {
	c.cookie++
	return c.cookie
}

// chunk is one structured or extended reply chunk.
type chunk struct {
	flags  nbd.ReplyFlags
	typ    nbd.ReplyType
	offset uint64 // the extended header's echoed request offset
	data   []byte
}

// rawReply is one request's whole reply.
type rawReply struct {
	req    nbd.Request
	cookie uint64
	errno  nbd.Errno
	msg    string
	// data is what a READ returned, holes filled with zeros, relative to the request offset.
	data   []byte
	chunks []chunk
}

// recv reads the next complete reply (all chunks up to DONE).
func (c *rawConn) recv() rawReply {
	c.t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(wireTimeout))
	var magic [4]byte
	c.readFull(magic[:])
	switch m := wbe.Uint32(magic[:]); {
	case m == nbd.MagicSimpleReply && c.mode != wireExtended:
		// With structured replies negotiated, a simple reply is still allowed for anything
		// but READ: "the server MUST NOT send a simple reply to NBD_CMD_READ".
		var h [12]byte
		c.readFull(h[:])
		r := rawReply{cookie: wbe.Uint64(h[4:]), errno: nbd.Errno(wbe.Uint32(h[:]))}
		r.req = c.popPending(r.cookie)
		if c.mode == wireStructured && r.req.Type == nbd.CmdRead {
			c.t.Fatalf("simple reply to a READ after structured replies were negotiated")
		}
		if r.errno == 0 && r.req.Type == nbd.CmdRead {
			r.data = make([]byte, r.req.Length)
			c.readFull(r.data)
		}
		return r
	case m == nbd.MagicStructuredReply && c.mode == wireStructured,
		m == nbd.MagicExtendedReply && c.mode == wireExtended:
		return c.recvChunks(magic[:])
	default:
		c.t.Fatalf("reply magic %#x in mode %d", m, c.mode)
	}
	panic("unreachable")
}

// recvChunks reads chunks of one cookie until DONE; magic is the first chunk's, already read.
func (c *rawConn) recvChunks(magic []byte) rawReply {
	c.t.Helper()
	var r rawReply
	for first := true; ; first = false {
		if !first {
			c.readFull(magic)
		}
		ck, cookie := c.readChunk()
		if first {
			r.cookie = cookie
			r.req = c.popPending(cookie)
			if r.req.Type == nbd.CmdRead && r.req.Length <= nbd.MaxPayload {
				r.data = make([]byte, r.req.Length)
			}
		} else if cookie != r.cookie {
			c.t.Fatalf("chunk for cookie %d inside the reply to %d", cookie, r.cookie)
		}
		if c.mode == wireExtended && ck.offset != r.req.Offset {
			c.t.Errorf("extended reply echoes offset %d, request had %d", ck.offset, r.req.Offset)
		}
		r.chunks = append(r.chunks, ck)
		c.applyChunk(&r, ck)
		if ck.flags&nbd.ReplyFlagDone != 0 {
			return r
		}
	}
}

// readChunk reads the rest of a chunk header and its payload.
func (c *rawConn) readChunk() (chunk, uint64) {
	c.t.Helper()
	var ck chunk
	var length uint64
	var cookie uint64
	if c.mode == wireExtended {
		var h [28]byte
		c.readFull(h[:])
		ck.flags, ck.typ = nbd.ReplyFlags(wbe.Uint16(h[:])), nbd.ReplyType(wbe.Uint16(h[2:]))
		cookie, ck.offset, length = wbe.Uint64(h[4:]), wbe.Uint64(h[12:]), wbe.Uint64(h[20:])
	} else {
		var h [16]byte
		c.readFull(h[:])
		ck.flags, ck.typ = nbd.ReplyFlags(wbe.Uint16(h[:])), nbd.ReplyType(wbe.Uint16(h[2:]))
		cookie, length = wbe.Uint64(h[4:]), uint64(wbe.Uint32(h[12:]))
	}
	if length > nbd.MaxPayload+64 {
		c.t.Fatalf("chunk of %d bytes", length)
	}
	ck.data = make([]byte, length)
	c.readFull(ck.data)
	return ck, cookie
}

// applyChunk folds one chunk into the reply: errors, data and holes of a READ.
func (c *rawConn) applyChunk(r *rawReply, ck chunk) {
	c.t.Helper()
	d := ck.data
	switch {
	case ck.typ.IsError():
		if len(d) < 6 {
			c.t.Fatalf("error chunk of %d bytes", len(d))
		}
		r.errno = nbd.Errno(wbe.Uint32(d))
		if n := int(wbe.Uint16(d[4:])); 6+n <= len(d) {
			r.msg = string(d[6 : 6+n])
		}
	case ck.typ == nbd.ReplyTypeOffsetData, ck.typ == nbd.ReplyTypeOffsetHole:
		if (ck.typ == nbd.ReplyTypeOffsetData && len(d) < 9) || (ck.typ == nbd.ReplyTypeOffsetHole && len(d) != 12) {
			c.t.Fatalf("%v chunk of %d bytes", ck.typ, len(d))
		}
		off := wbe.Uint64(d)
		n := uint64(len(d) - 8)
		if ck.typ == nbd.ReplyTypeOffsetHole {
			n = uint64(wbe.Uint32(d[8:]))
		}
		if off < r.req.Offset || off+n > r.req.Offset+uint64(len(r.data)) {
			c.t.Fatalf("%v chunk [%d,+%d) outside the request [%d,+%d)", ck.typ, off, n, r.req.Offset, r.req.Length)
		}
		if ck.typ == nbd.ReplyTypeOffsetData {
			copy(r.data[off-r.req.Offset:], d[8:])
		}
	}
}

// popPending takes the oldest request sent with cookie.
func (c *rawConn) popPending(cookie uint64) nbd.Request {
	c.t.Helper()
	q := c.pending[cookie]
	if len(q) == 0 {
		c.t.Fatalf("reply for cookie %d, which has no request outstanding", cookie)
	}
	if len(q) == 1 {
		delete(c.pending, cookie)
	} else {
		c.pending[cookie] = q[1:]
	}
	return q[0]
}

// do sends one request and waits for its reply.
func (c *rawConn) do(r nbd.Request, payload []byte) rawReply {
	c.t.Helper()
	if r.Cookie == 0 {
		r.Cookie = c.nextCookie()
	}
	c.send(r, payload)
	return c.recv()
}

// read is a READ of length bytes at off with flags.
func (c *rawConn) read(off, length uint64, flags nbd.CmdFlags) rawReply {
	c.t.Helper()
	return c.do(nbd.Request{Type: nbd.CmdRead, Offset: off, Length: length, Flags: flags}, nil)
}

// writeAt is a WRITE of p at off (with PAYLOAD_LEN in extended mode).
func (c *rawConn) writeAt(off uint64, p []byte, flags nbd.CmdFlags) rawReply {
	c.t.Helper()
	if c.mode == wireExtended {
		flags |= nbd.CmdFlagPayloadLen
	}
	return c.do(nbd.Request{Type: nbd.CmdWrite, Offset: off, Length: uint64(len(p)), Flags: flags}, p)
}

// cmd is a payload-less request.
func (c *rawConn) cmd(typ nbd.Cmd, off, length uint64, flags nbd.CmdFlags) rawReply {
	c.t.Helper()
	return c.do(nbd.Request{Type: typ, Offset: off, Length: length, Flags: flags}, nil)
}

// wantErrno requires reply r to carry errno want.
func (c *rawConn) wantErrno(r rawReply, want nbd.Errno) {
	c.t.Helper()
	if r.errno != want {
		c.t.Fatalf("%v [%d,+%d) flags %v: errno %v (%q), want %v", r.req.Type, r.req.Offset, r.req.Length,
			r.req.Flags, r.errno, r.msg, want)
	}
}

// disc sends NBD_CMD_DISC and requires the server to close.
func (c *rawConn) disc() {
	c.t.Helper()
	c.write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdDisc}, c.mode == wireExtended))
	if b := c.expectClosed(); len(b) > 0 {
		c.t.Fatalf("%d bytes after NBD_CMD_DISC", len(b))
	}
}

func (r rawReply) String() string {
	return fmt.Sprintf("%v cookie %d errno %v", r.req.Type, r.cookie, r.errno)
}

// close closes the connection now (the test's cleanup would, later).
func (c *rawConn) close() { c.nc.Close() }

// reset closes a TCP connection with a reset (SO_LINGER 0), as a killed client's kernel does
// when data is unread; other connections just close.
func (c *rawConn) reset() {
	if tc, ok := c.nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.nc.Close()
}
