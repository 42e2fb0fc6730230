// Replies: how a worker assembles one (headers in a small arena, data by reference) and the
// single writer goroutine that owns the socket and sends each reply whole with one vectored
// write.
package server

import (
	"net"
	"sync"
)

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

// writeLoop owns the socket's write side. Replies go out whole, in the order queued (which
// need not be request order). Replies already waiting are coalesced into one vectored write,
// up to maxBatch replies or maxBatchBytes. When finish is requested it writes what is queued,
// then closes the socket. After a write error, or once closed, it stops writing but keeps
// draining until c.out is closed, so that workers never block and buffers return to their
// pools.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	if c.tlsSock != nil {
		c.tlsSock.bufferWrites()
	}
	var vec net.Buffers
	var batch []*reply
	dead := false
	finishReq := c.finishReq
	for {
		var r *reply
		select {
		case r = <-c.out:
		case <-finishReq:
			finishReq = nil
			for {
				select {
				case r := <-c.out:
					if r != nil {
						batch = append(batch, r)
						continue
					}
				default:
				}
				break
			}
			c.flush(batch, &vec, dead)
			batch = batch[:0]
			dead = true
			c.abort()
			continue
		}
		if r == nil {
			return // c.out closed: every worker is done
		}
		batch = append(batch[:0], r)
		size := r.size()
	fill:
		for len(batch) < maxBatch && size < maxBatchBytes {
			select {
			case r := <-c.out:
				if r == nil {
					break fill
				}
				batch = append(batch, r)
				size += r.size()
			default:
				break fill
			}
		}
		dead = c.flush(batch, &vec, dead)
		batch = batch[:0]
	}
}

// flush writes a batch of replies in one vectored write (unless the socket is dead) and
// releases them; it returns whether the socket is dead.
func (c *conn) flush(batch []*reply, vec *net.Buffers, dead bool) bool {
	*vec = (*vec)[:0]
	for _, r := range batch {
		r.cutHdr()
		for _, s := range r.segs {
			if s.data != nil {
				*vec = append(*vec, s.data)
			} else {
				*vec = append(*vec, r.hdr[s.lo:s.hi])
			}
		}
	}
	if !dead && len(*vec) > 0 {
		var err error
		if c.tlsSock != nil {
			if err = c.tlsSock.writeVec(c.wire, *vec); err == nil {
				err = c.tlsSock.flush()
			}
		} else {
			v := *vec // WriteTo consumes its receiver
			_, err = v.WriteTo(c.wire)
		}
		if err != nil {
			dead = true
			c.srv.log.Debug("nbd: write failed; closing", "remote", c.remote, "err", err)
			c.abort()
		}
	}
	clear((*vec)[:cap(*vec)])
	for _, r := range batch {
		c.release(r)
	}
	clear(batch)
	return dead
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
