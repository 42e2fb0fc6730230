// NBD_CMD_READ: simple replies, and structured/extended replies that are sparse (OFFSET_HOLE
// for ranges the backend reports as reading zero) unless DF asks for a single chunk.
package server

// minHole is the smallest zero run sent as OFFSET_HOLE; smaller ones travel as data, since a
// chunk header costs about as much as a few hundred bytes of zeros and "the server SHOULD use
// chunks with lengths and offsets as an integer multiple of 512 bytes".
const minHole = 4096

// maxReadExtents bounds the BlockStatuser calls and chunks of one sparse read; whatever is
// left after that many extents is read as data.
const maxReadExtents = 256

// span is a piece of a read: n bytes at off that are data or read as zeros.
type span struct {
	off, n uint64
	zero   bool
}

func (c *conn) doRead(r *reply, req *Request) Errno {
	buf := *r.buf
	if c.mode == modeSimple {
		if len(buf) > 0 {
			if err := c.x.Backend.ReadAt(c.srv.ctx, buf, req.Offset); err != nil {
				// "If an error occurs, the server SHOULD set the appropriate error code in the
				// error field. ... it MUST NOT send any payload for this request."
				errno := errnoOf(err, false)
				r.hdr = appendSimpleReply(r.hdr, errno, req.Cookie)
				return errno
			}
		}
		r.hdr = appendSimpleReply(r.hdr, 0, req.Cookie)
		r.data(buf)
		return 0
	}

	ext := c.mode == modeExtended
	if len(buf) == 0 {
		// No content chunk may describe zero bytes; NONE alone answers an empty read.
		r.hdr = appendChunkHeader(r.hdr, ext, ReplyFlagDone, ReplyTypeNone, req.Cookie, req.Offset, 0)
		return 0
	}
	spans := c.readSpans(req)
	for _, s := range spans {
		if s.zero {
			continue
		}
		lo := s.off - req.Offset
		if err := c.x.Backend.ReadAt(c.srv.ctx, buf[lo:lo+s.n], s.off); err != nil {
			// Nothing has been sent yet, so one ERROR_OFFSET naming the failed range is the
			// whole reply; "the client MAY assume ... that portions of the read that do not
			// have a corresponding content chunk are not valid."
			errno := errnoOf(err, false)
			c.errorChunk(r, req, ReplyTypeErrorOffset, errno, "read failed: "+errnoText(errno), s.off, ReplyFlagDone)
			return errno
		}
	}

	if req.Flags&CmdFlagDF != 0 && len(spans) > 1 {
		// "If the area being read contains both data and a hole, the server MUST use
		// NBD_REPLY_TYPE_OFFSET_DATA with the zeroes explicitly present."
		for _, s := range spans {
			if s.zero {
				lo := s.off - req.Offset
				clear(buf[lo : lo+s.n])
			}
		}
		spans = []span{{off: req.Offset, n: req.Length}}
	}
	// Every read has succeeded, so the last chunk can carry DONE.
	for i, s := range spans {
		var flags ReplyFlags
		if i == len(spans)-1 {
			flags = ReplyFlagDone
		}
		if s.zero {
			// OFFSET_HOLE: offset u64 | hole size u32
			r.hdr = appendChunkHeader(r.hdr, ext, flags, ReplyTypeOffsetHole, req.Cookie, req.Offset, 12)
			r.hdr = writeBuf(r.hdr).u64(s.off).u32(uint32(s.n))
			continue
		}
		// OFFSET_DATA: offset u64 | data
		r.hdr = appendChunkHeader(r.hdr, ext, flags, ReplyTypeOffsetData, req.Cookie, req.Offset, 8+s.n)
		r.hdr = writeBuf(r.hdr).u64(s.off)
		lo := s.off - req.Offset
		r.data(buf[lo : lo+s.n])
	}
	return 0
}

// readSpans splits a read into data and zero spans using the backend's allocation map, when
// it has one and sparse reads are on. Zero runs shorter than minHole are folded into data.
// Any error or inconsistency in the map just means "data".
func (c *conn) readSpans(req *Request) []span {
	all := []span{{off: req.Offset, n: req.Length}}
	st := c.x.statuser
	if st == nil || c.srv.Config.NoSparseReads || req.Length < 2*minHole {
		// A small read gains little from a hole chunk; skip the allocation lookup.
		return all
	}
	var spans []span
	add := func(off, n uint64, zero bool) {
		if k := len(spans) - 1; k >= 0 && spans[k].zero == zero {
			spans[k].n += n
			return
		}
		spans = append(spans, span{off: off, n: n, zero: zero})
	}
	off, end := req.Offset, req.Offset+req.Length
	for calls := 0; off < end && len(spans) < maxReadExtents && calls < maxReadExtents; calls++ {
		ext, err := st.Allocation(c.srv.ctx, off, end-off)
		if err != nil || len(ext) == 0 {
			break
		}
		for _, e := range ext {
			n := min(e.Length, end-off)
			if n == 0 {
				break
			}
			add(off, n, e.Flags&StateZero != 0)
			off += n
		}
	}
	if off < end {
		add(off, end-off, false)
	}
	// Fold short zero runs into their neighbours.
	out := spans[:0]
	for _, s := range spans {
		if s.zero && s.n < minHole {
			s.zero = false
		}
		if k := len(out) - 1; k >= 0 && out[k].zero == s.zero {
			out[k].n += s.n
			continue
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return all
	}
	return out
}
