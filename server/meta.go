// Metadata contexts: NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT, with query
// matching that follows qemu-nbd for base:allocation, qemu:allocation-depth and
// qemu:dirty-bitmap:NAME.
package server

import "strings"

// metaKind is a metadata context this server can report.
type metaKind uint8

const (
	metaBase   metaKind = iota // base:allocation
	metaDepth                  // qemu:allocation-depth
	metaBitmap                 // qemu:dirty-bitmap:NAME
)

// MetaQemuDirtyBitmapPrefix starts QEMU's dirty bitmap contexts ("qemu:dirty-bitmap:NAME",
// QEMU's docs/interop/nbd.txt): flag 1 (StateDirty) marks dirty extents.
const MetaQemuDirtyBitmapPrefix = "qemu:dirty-bitmap:"

// StateDirty is the qemu:dirty-bitmap flag of a dirty extent.
const StateDirty uint32 = 1

// Context ids handed out by SET_META_CONTEXT; fixed per kind, qemu-nbd 7.2's (0 for
// base:allocation, 1 for qemu:allocation-depth, 2+i for the export's i-th bitmap), since
// clients see them on the wire.
const (
	metaIDBase   uint32 = 0
	metaIDDepth  uint32 = 1
	metaIDBitmap uint32 = 2
)

// metaContext is a selected context.
type metaContext struct {
	id     uint32
	kind   metaKind
	bitmap string // metaBitmap: the bitmap's name
}

func (m metaContext) name() string {
	switch m.kind {
	case metaBase:
		return MetaBaseAllocation
	case metaDepth:
		return MetaQemuAllocationDepth
	}
	return MetaQemuDirtyBitmapPrefix + m.bitmap
}

// metaSel is what a run of queries selected.
type metaSel struct {
	base, depth bool
	bitmaps     []bool // per Export.Bitmaps
}

func (s *metaSel) allBitmaps() {
	for i := range s.bitmaps {
		s.bitmaps[i] = true
	}
}

// metaMatch applies one query to export x. Queries follow qemu-nbd:
//
//	"base:allocation"          selects base:allocation
//	"base:"                    lists base:allocation; selects nothing in SET
//	"qemu:allocation-depth"    selects qemu:allocation-depth when the export offers it
//	"qemu:"                    lists qemu:allocation-depth and every bitmap; selects nothing in SET
//	"qemu:dirty-bitmap:"       lists every bitmap; selects nothing in SET
//	"qemu:dirty-bitmap:NAME"   selects that bitmap when the export offers it
//	anything else              ignored ("the server MUST ignore query strings belonging to an
//	                           unknown namespace", and unknown leaf names too)
func metaMatch(q string, list bool, x *export, sel *metaSel) {
	switch {
	case q == MetaBaseAllocation, q == "base:" && list:
		sel.base = true
	case q == "qemu:":
		if list {
			sel.depth = sel.depth || x.AllocationDepth
			sel.allBitmaps()
		}
	case q == MetaQemuAllocationDepth:
		sel.depth = sel.depth || x.AllocationDepth
	case q == MetaQemuDirtyBitmapPrefix:
		if list {
			sel.allBitmaps()
		}
	case strings.HasPrefix(q, MetaQemuDirtyBitmapPrefix):
		name := q[len(MetaQemuDirtyBitmapPrefix):]
		for i, b := range x.Bitmaps {
			if b == name {
				sel.bitmaps[i] = true
				break
			}
		}
	}
}

// optMetaContext handles both meta-context options:
//
//	C: export name length u32 | name | query count u32 | (query length u32 | query) x count
//	S: REP_META_CONTEXT (id u32 | name) per context, then REP_ACK
func (c *conn) optMetaContext(opt Opt, o *optReader, n *negotiation) error {
	list := opt == OptListMetaContext
	if !list {
		// "Issuing this command replaces all previously-set metadata contexts (including
		// when this command fails)".
		n.metas, n.metaExport = nil, nil
	}
	invalid := func(format string, args ...any) error {
		if err := o.skip(); err != nil {
			return err
		}
		return c.optError(opt, RepErrInvalid, format, args...)
	}
	if !list && n.mode == modeSimple {
		// "This option MUST NOT be requested unless structured replies or extended headers
		// have been negotiated first. If a client attempts to do so, a server SHOULD send
		// NBD_REP_ERR_INVALID".
		return invalid("%v needs structured replies or extended headers first", opt)
	}
	name, bad, err := o.exportName(opt, 4)
	if err != nil {
		return err
	}
	if bad != "" {
		return invalid("%s", bad)
	}
	count, err := o.u32()
	if err != nil {
		return err
	}
	if uint64(count)*4 > uint64(o.left) {
		return invalid("%d queries cannot fit in %d bytes", count, o.left)
	}
	x := c.srv.exports.find(name)
	var sel metaSel
	if x != nil {
		sel.bitmaps = make([]bool, len(x.Bitmaps))
	}
	if list && count == 0 && x != nil {
		// "If zero queries are sent, then the server MUST return all the metadata contexts
		// that are available to the client to select on the given export."
		sel.base, sel.depth = true, x.AllocationDepth
		sel.allBitmaps()
	}
	for i := range count {
		if o.left < 4 {
			return invalid("query %d runs past the option", i)
		}
		qlen, err := o.u32()
		if err != nil {
			return err
		}
		if qlen > o.left {
			// "If the option request is syntactically invalid (such as a query length that
			// would require reading beyond the original length given in the option header),
			// the server MUST fail the request with NBD_REP_ERR_INVALID."
			return invalid("query length %d runs past the option", qlen)
		}
		if qlen > MaxStringLen || x == nil {
			if err := o.discard(qlen); err != nil {
				return err
			}
			continue
		}
		q, err := o.str(qlen)
		if err != nil {
			return err
		}
		if !strings.Contains(q, ":") {
			continue // no namespace: matches nothing
		}
		metaMatch(q, list, x, &sel)
	}
	if o.left != 0 {
		return invalid("%d bytes after the last query", o.left)
	}
	if err := checkString(name); err != nil {
		return c.optError(opt, RepErrInvalid, "export name %s: %v", quote(name), err)
	}
	if x == nil {
		n.refused = true
		return c.optError(opt, RepErrUnknown, "export %s not present", quote(name))
	}
	var chosen []metaContext
	if sel.base {
		chosen = append(chosen, metaContext{id: metaIDBase, kind: metaBase})
	}
	if sel.depth {
		chosen = append(chosen, metaContext{id: metaIDDepth, kind: metaDepth})
	}
	for i, on := range sel.bitmaps {
		if on {
			chosen = append(chosen, metaContext{id: metaIDBitmap + uint32(i), kind: metaBitmap, bitmap: x.Bitmaps[i]})
		}
	}
	for _, m := range chosen {
		id := m.id
		if list {
			id = 0 // "The metadata context ID in these replies is reserved and SHOULD be set to zero"
		}
		if err := c.optReply(opt, RepMetaContext, writeBuf(nil).u32(id).str(m.name())); err != nil {
			return err
		}
	}
	if err := c.optReply(opt, RepAck, nil); err != nil {
		return err
	}
	if !list {
		n.metas, n.metaExport = chosen, x
	}
	return nil
}
