// NBD_CMD_READ: simple replies, and structured/extended replies split as qemu-nbd 7.2 splits
// them (docs/qemu-nbd-fidelity.md): one chunk per block-status extent, OFFSET_HOLE for the
// extents that read as zeros and OFFSET_DATA for the others, whatever their size; a single
// OFFSET_DATA chunk with DF.
package server

import "context"

// maxReadExtents bounds the chunks of one sparse read (a 32 MiB read of 512-byte extents
// needs 65536); whatever is left after that many is read as one data chunk.
const maxReadExtents = 1 << 16

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
			c.errorChunk(r, req, ReplyTypeErrorOffset, errno, "reading from file failed", s.off, ReplyFlagDone)
			return errno
		}
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

// readSpans splits a read into one span per extent of the backend's allocation map, when it
// has one and sparse reads are on: extents with NBD_STATE_ZERO are zero spans, the others
// data. Neighbouring extents are not merged, even when both read as zeros, since qemu-nbd
// sends a chunk per block-status answer. Any error or inconsistency in the map just means
// "data" for the rest of the range.
func (c *conn) readSpans(req *Request) []span {
	all := []span{{off: req.Offset, n: req.Length}}
	if c.srv.Config.NoSparseReads || req.Flags&CmdFlagDF != 0 {
		return all
	}
	extents := c.x.readExtents()
	if extents == nil {
		return all
	}
	var spans []span
	off, end := req.Offset, req.Offset+req.Length
	for calls := 0; off < end && len(spans) < maxReadExtents && calls < maxReadExtents; calls++ {
		ext, err := extents(c.srv.ctx, off, end-off)
		if err != nil || len(ext) == 0 {
			break
		}
		for _, e := range ext {
			n := min(e.Length, end-off)
			if n == 0 || len(spans) == maxReadExtents {
				break
			}
			spans = append(spans, span{off: off, n: n, zero: e.Flags&StateZero != 0})
			off += n
		}
	}
	if off < end {
		spans = append(spans, span{off: off, n: end - off})
	}
	return spans
}

// readExtents is the map a sparse read is split along: the backend's ReadSplitter, else its
// BlockStatuser, else nil.
func (x *export) readExtents() func(ctx context.Context, off, length uint64) ([]Extent, error) {
	switch {
	case x.splitter != nil:
		return x.splitter.ReadExtents
	case x.statuser != nil:
		return x.statuser.Allocation
	}
	return nil
}
