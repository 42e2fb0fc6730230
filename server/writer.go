// Replies: how a worker assembles one (headers in a small arena, data by reference) and how
// a batch of them goes out whole in one vectored write (sender.go decides who writes).
package server

import "sync"

// replyMode is the reply style negotiated in the handshake.
type replyMode uint8

const (
	modeSimple     replyMode = iota // no negotiation: simple replies only
	modeStructured                  // NBD_OPT_STRUCTURED_REPLY
	modeExtended                    // NBD_OPT_EXTENDED_HEADERS: 32-byte headers both ways
)

func (m replyMode) String() string {
	switch m {
	case modeSimple:
		return "simple"
	case modeStructured:
		return "structured"
	}
	return "extended"
}

// segment is a piece of a reply on the wire: hdr[lo:hi] of its reply, or data.
type segment struct {
	lo, hi int
	data   []byte
}

// reply is everything one request sends back, in wire order. Headers and small payloads
// (offsets, hole sizes, extents, error messages) accumulate in hdr; READ data is referenced,
// not copied.
type reply struct {
	hdr  []byte
	mark int // start of hdr bytes not yet covered by segs
	segs []segment

	buf  *[]byte // pooled data buffer, returned after the write
	cost int64   // budget bytes to release after the write
	slot bool    // the reply holds a budget slot
}

// maxPooledArena keeps replies that built large block-status payloads out of the pool.
const maxPooledArena = 64 << 10

var replyPool = sync.Pool{New: func() any { return &reply{hdr: make([]byte, 0, 128)} }}

func newReply() *reply { return replyPool.Get().(*reply) }

func freeReply(r *reply) {
	if cap(r.hdr) > maxPooledArena {
		return
	}
	clear(r.segs) // drop references to data buffers
	*r = reply{hdr: r.hdr[:0], segs: r.segs[:0]}
	replyPool.Put(r)
}

// data appends a by-reference data segment.
func (r *reply) data(p []byte) {
	r.cutHdr()
	r.segs = append(r.segs, segment{data: p})
}

func (r *reply) cutHdr() {
	if len(r.hdr) > r.mark {
		r.segs = append(r.segs, segment{lo: r.mark, hi: len(r.hdr)})
		r.mark = len(r.hdr)
	}
}

// flush writes a batch of replies in one vectored write and releases them; it reports
// whether the write succeeded. On failure it closes the connection.
func (c *conn) flush(batch []*reply) bool {
	s := &c.snd
	s.vec = s.vec[:0]
	for _, r := range batch {
		r.cutHdr()
		for _, sg := range r.segs {
			if sg.data != nil {
				s.vec = append(s.vec, sg.data)
			} else {
				s.vec = append(s.vec, r.hdr[sg.lo:sg.hi])
			}
		}
	}
	var err error
	if len(s.vec) > 0 {
		if s.tls != nil {
			if err = s.tls.writeVec(c.wire, s.vec); err == nil {
				err = s.tls.flush()
			}
		} else {
			v := s.vec // WriteTo consumes its receiver
			_, err = v.WriteTo(c.wire)
		}
	}
	clear(s.vec[:cap(s.vec)])
	for _, r := range batch {
		c.release(r)
	}
	if err != nil {
		c.srv.log.Debug("nbd: write failed; closing", "remote", c.remote, "err", err)
		c.abort()
		return false
	}
	return true
}

// Limits of one coalesced write.
const (
	maxBatch      = 64
	maxBatchBytes = 1 << 20
)

// size is the reply's length on the wire.
func (r *reply) size() int {
	n := len(r.hdr)
	for _, s := range r.segs {
		n += len(s.data)
	}
	return n
}

// release returns what a reply held: its buffer and its budget.
func (c *conn) release(r *reply) {
	putBuf(r.buf)
	if r.slot {
		c.budget.release(r.cost)
	}
	freeReply(r)
}

// okReply builds a successful reply without payload: simple unless extended headers were
// negotiated ("If extended headers have been negotiated, a simple reply MUST NOT be used").
func (c *conn) okReply(r *reply, req *Request) {
	if c.mode == modeExtended {
		r.hdr = appendChunkHeader(r.hdr, true, ReplyFlagDone, ReplyTypeNone, req.Cookie, req.Offset, 0)
		return
	}
	r.hdr = appendSimpleReply(r.hdr, 0, req.Cookie)
}

// errorReply builds a failed reply: a simple reply with the errno, or, once structured
// replies or extended headers are negotiated, an NBD_REPLY_TYPE_ERROR chunk carrying msg
// ("The server SHOULD prefer sending errors via a structured reply").
func (c *conn) errorReply(r *reply, req *Request, errno Errno, msg string) {
	if c.mode == modeSimple {
		r.hdr = appendSimpleReply(r.hdr, errno, req.Cookie)
		return
	}
	c.errorChunk(r, req, ReplyTypeError, errno, msg, 0, ReplyFlagDone)
}

// errorChunk appends an ERROR or ERROR_OFFSET chunk:
//
//	error u32 | message length u16 | message | (ERROR_OFFSET only) offset u64
func (c *conn) errorChunk(r *reply, req *Request, typ ReplyType, errno Errno, msg string, off uint64, flags ReplyFlags) {
	if len(msg) > MaxStringLen {
		msg = msg[:MaxStringLen]
	}
	n := uint64(6 + len(msg))
	if typ == ReplyTypeErrorOffset {
		n += 8
	}
	r.hdr = appendChunkHeader(r.hdr, c.mode == modeExtended, flags, typ, req.Cookie, req.Offset, n)
	w := writeBuf(r.hdr).u32(uint32(errno)).u16(uint16(len(msg))).str(msg)
	if typ == ReplyTypeErrorOffset {
		w = w.u64(off)
	}
	r.hdr = w
}
