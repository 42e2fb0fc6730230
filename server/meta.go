// Metadata contexts: NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT, with query
// matching that follows qemu-nbd for base:allocation and qemu:allocation-depth.
package server

import "strings"

// metaKind is a metadata context this server can report.
type metaKind uint8

const (
	metaBase  metaKind = iota // base:allocation
	metaDepth                 // qemu:allocation-depth
)

func (k metaKind) String() string {
	if k == metaBase {
		return MetaBaseAllocation
	}
	return MetaQemuAllocationDepth
}

// Context ids handed out by SET_META_CONTEXT; fixed per kind, qemu-nbd 7.2's (0 for
// base:allocation, 1 for qemu:allocation-depth), since clients see them on the wire.
const (
	metaIDBase  uint32 = 0
	metaIDDepth uint32 = 1
)

// metaContext is a selected context.
type metaContext struct {
	id   uint32
	kind metaKind
}

// metaMatch applies one query to export x. Queries follow qemu-nbd:
//
//	"base:allocation"        selects base:allocation
//	"base:"                  lists base:allocation; selects nothing in SET
//	"qemu:allocation-depth"  selects qemu:allocation-depth when the export offers it
//	"qemu:"                  lists qemu:allocation-depth; selects nothing in SET
//	anything else            ignored ("the server MUST ignore query strings belonging to an
//	                         unknown namespace", and unknown leaf names too)
func metaMatch(q string, list bool, x *export, base, depth *bool) {
	switch {
	case q == MetaBaseAllocation, q == "base:" && list:
		*base = true
	case !x.AllocationDepth:
	case q == MetaQemuAllocationDepth, q == "qemu:" && list:
		*depth = true
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
	var base, depth bool
	if list && count == 0 {
		// "If zero queries are sent, then the server MUST return all the metadata contexts
		// that are available to the client to select on the given export."
		base, depth = true, x != nil && x.AllocationDepth
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
		metaMatch(q, list, x, &base, &depth)
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
	var sel []metaContext
	if base {
		sel = append(sel, metaContext{id: metaIDBase, kind: metaBase})
	}
	if depth {
		sel = append(sel, metaContext{id: metaIDDepth, kind: metaDepth})
	}
	for _, m := range sel {
		id := m.id
		if list {
			id = 0 // "The metadata context ID in these replies is reserved and SHOULD be set to zero"
		}
		name := m.kind.String()
		if err := c.optReply(opt, RepMetaContext, writeBuf(nil).u32(id).str(name)); err != nil {
			return err
		}
	}
	if err := c.optReply(opt, RepAck, nil); err != nil {
		return err
	}
	if !list {
		n.metas, n.metaExport = sel, x
	}
	return nil
}
