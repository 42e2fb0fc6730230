// NBD_CMD_BLOCK_STATUS: one status chunk per selected context, compact (BLOCK_STATUS) or,
// with extended headers, BLOCK_STATUS_EXT.
package server

import "errors"

// maxStatusExtents bounds the descriptors of one chunk ("a server SHOULD NOT send more than
// 2^20 status descriptors in a single chunk"); clients ask again for the rest.
const maxStatusExtents = 8192

var errBadExtents = errors.New("nbd: backend returned no usable extent")

func (c *conn) doBlockStatus(r *reply, req *Request, metas []metaContext) Errno {
	ext := c.mode == modeExtended
	reqOne := req.Flags&CmdFlagReqOne != 0
	lists := make([][]Extent, len(metas))
	for i, m := range metas {
		exts, err := c.extents(m, req.Offset, req.Length)
		if err == nil {
			exts, err = clampExtents(exts, req.Length, reqOne)
		}
		if err != nil {
			errno := errnoOf(err, false)
			c.errorReply(r, req, errno, "can't get block status")
			return errno
		}
		lists[i] = exts
	}
	for i, m := range metas {
		var flags ReplyFlags
		if i == len(metas)-1 {
			flags = ReplyFlagDone
		}
		exts := lists[i]
		if ext {
			// BLOCK_STATUS_EXT: context id u32 | descriptor count u32 |
			// (extent length u64 | status flags u64) x count
			n := uint64(8 + 16*len(exts))
			r.hdr = appendChunkHeader(r.hdr, true, flags, ReplyTypeBlockStatusExt, req.Cookie, req.Offset, n)
			w := writeBuf(r.hdr).u32(m.id).u32(uint32(len(exts)))
			for _, e := range exts {
				w = w.u64(e.Length).u64(uint64(e.Flags))
			}
			r.hdr = w
			continue
		}
		// BLOCK_STATUS: context id u32 | (extent length u32 | status flags u32) x count
		n := uint64(4 + 8*len(exts))
		r.hdr = appendChunkHeader(r.hdr, false, flags, ReplyTypeBlockStatus, req.Cookie, req.Offset, n)
		w := writeBuf(r.hdr).u32(m.id)
		for _, e := range exts {
			w = w.u32(uint32(e.Length)).u32(e.Flags)
		}
		r.hdr = w
	}
	return 0
}

// extents asks the backend about one context. Without a BlockStatuser the whole range is
// allocated data (status 0, which "a server MAY always safely report"); without a
// DepthStatuser it is at depth 1, the top image, as a format without backing files has it.
// A bitmap context needs a DirtyBitmapper (checked when the export is added).
func (c *conn) extents(m metaContext, off, length uint64) ([]Extent, error) {
	x := c.x
	switch m.kind {
	case metaBase:
		if x.statuser != nil {
			return x.statuser.Allocation(c.srv.ctx, off, length)
		}
		return []Extent{{Length: length}}, nil
	case metaBitmap:
		return x.bitmapper.DirtyBitmap(c.srv.ctx, m.bitmap, off, length)
	default:
		if x.depther != nil {
			return x.depther.AllocationDepth(c.srv.ctx, off, length)
		}
		return []Extent{{Length: length, Flags: 1}}, nil
	}
}

// clampExtents makes a backend's answer a valid descriptor list: no zero lengths, the total
// within the requested length (so that 32-bit lengths cannot overflow in compact replies),
// neighbours with equal flags merged, at most maxStatusExtents entries, and exactly one with
// REQ_ONE ("each chunk contains exactly one descriptor where the *length* of the descriptor
// MUST NOT be greater than the *length* of the request").
func clampExtents(exts []Extent, length uint64, reqOne bool) ([]Extent, error) {
	out := make([]Extent, 0, min(len(exts), maxStatusExtents))
	var total uint64
	for _, e := range exts {
		if total >= length || len(out) == maxStatusExtents && out[len(out)-1].Flags != e.Flags {
			break
		}
		if e.Length == 0 {
			break
		}
		n := min(e.Length, length-total)
		total += n
		if k := len(out) - 1; k >= 0 && out[k].Flags == e.Flags {
			out[k].Length += n
			continue
		}
		out = append(out, Extent{Length: n, Flags: e.Flags})
	}
	if len(out) == 0 {
		return nil, errBadExtents
	}
	if reqOne {
		out = out[:1]
	}
	return out, nil
}
