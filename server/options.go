// Export selection options: NBD_OPT_EXPORT_NAME, NBD_OPT_LIST, NBD_OPT_INFO and NBD_OPT_GO.
package server

// optExportName ends the handshake the old way; it has no error reply, so every failure is a
// hard disconnect ("If the chosen export does not exist ... the server MUST terminate the
// session").
func (c *conn) optExportName(o *optReader, n *negotiation) (*export, error) {
	if n.mode == modeExtended {
		// "a client that has used NBD_OPT_EXTENDED_HEADERS to negotiate extended headers MUST
		// NOT use this option."
		return nil, violation("EXPORT_NAME after EXTENDED_HEADERS")
	}
	name, err := o.str(o.left) // length <= MaxStringLen, checked by optionLimit
	if err != nil {
		return nil, err
	}
	if err := checkString(name); err != nil {
		return nil, violation("export name %s: %v", quote(name), err)
	}
	x := c.srv.exports.find(name)
	if x == nil {
		return nil, violation("export not found") // qemu-nbd's words
	}
	if n.metaExport != x {
		n.metas = nil
	}
	// S: size u64 | transmission flags u16 | 124 zero bytes unless NBD_FLAG_C_NO_ZEROES
	b := writeBuf(c.scratch[:0]).u64(x.size).u16(uint16(n.transmissionFlags(x, OptExportName)))
	if !n.noZeroes {
		b = append(b, make([]byte, exportNamePadding)...)
	}
	if _, err := c.wire.Write(b); err != nil {
		return nil, err
	}
	return x, nil
}

// optList sends one NBD_REP_SERVER per export (name, then the description as qemu-nbd
// does), then NBD_REP_ACK.
func (c *conn) optList(o *optReader) error {
	const opt = OptList
	if o.left > 0 {
		// "the server SHOULD reject a request that includes data with NBD_REP_ERR_INVALID"
		if err := o.skip(); err != nil {
			return err
		}
		return c.optError(opt, RepErrInvalid, "LIST must not carry data")
	}
	for _, x := range c.srv.exports.list {
		p := writeBuf(make([]byte, 0, 4+len(x.Name)+len(x.Description))).
			u32(uint32(len(x.Name))).str(x.Name).str(x.Description)
		if err := c.optReply(opt, RepServer, p); err != nil {
			return err
		}
	}
	return c.optReply(opt, RepAck, nil)
}

// optInfoGo answers NBD_OPT_INFO and NBD_OPT_GO:
//
//	C: name length u32 | name | request count u16 | requests u16 x count
//	S: [REP_INFO NAME] [REP_INFO DESCRIPTION] REP_INFO BLOCK_SIZE  REP_INFO EXPORT  REP_ACK
//
// NAME and DESCRIPTION are sent when requested; BLOCK_SIZE and EXPORT always. As in
// qemu-nbd, the minimum block size in BLOCK_SIZE is the export's only for INFO or for a GO
// that requested BLOCK_SIZE (a client that will honour it), and 1 otherwise.
func (c *conn) optInfoGo(opt Opt, o *optReader, n *negotiation) (*export, error) {
	invalid := func(format string, args ...any) (*export, error) {
		if err := o.skip(); err != nil {
			return nil, err
		}
		return nil, c.optError(opt, RepErrInvalid, format, args...)
	}
	name, bad, err := o.exportName(opt, 2)
	if err != nil {
		return nil, err
	}
	if bad != "" {
		return invalid("%s", bad)
	}
	count, err := o.u16()
	if err != nil {
		return nil, err
	}
	if uint32(count)*2 != o.left {
		return invalid("%d information requests do not fill the %d bytes left", count, o.left)
	}
	var wantName, wantDesc, wantBlockSize bool
	for range count {
		r, err := o.u16()
		if err != nil {
			return nil, err
		}
		switch Info(r) {
		case InfoName:
			wantName = true
		case InfoDescription:
			wantDesc = true
		case InfoBlockSize:
			wantBlockSize = true
		}
		// "The server MUST ignore any information requests it does not understand."
	}
	if err := checkString(name); err != nil {
		return nil, c.optError(opt, RepErrInvalid, "export name %s: %v", quote(name), err)
	}
	x := c.srv.exports.find(name)
	if x == nil {
		n.refused = true
		return nil, c.optError(opt, RepErrUnknown, "export %s not present", quote(name))
	}
	if opt == OptGo && n.metaExport != x {
		// Contexts chosen for another export do not carry over.
		n.metas = nil
	}

	if wantName {
		if err := c.info(opt, writeBuf(nil).u16(uint16(InfoName)).str(x.Name)); err != nil {
			return nil, err
		}
	}
	if wantDesc && x.Description != "" {
		if err := c.info(opt, writeBuf(nil).u16(uint16(InfoDescription)).str(x.Description)); err != nil {
			return nil, err
		}
	}
	minBlock := uint32(1)
	if opt == OptInfo || wantBlockSize {
		minBlock = x.minBlock
	}
	bs := writeBuf(nil).u16(uint16(InfoBlockSize)).u32(minBlock).
		u32(max(PreferredBlockSize, minBlock)).u32(MaxPayload)
	if err := c.info(opt, bs); err != nil {
		return nil, err
	}
	ex := writeBuf(nil).u16(uint16(InfoExport)).u64(x.size).u16(uint16(n.transmissionFlags(x, opt)))
	if err := c.info(opt, ex); err != nil {
		return nil, err
	}
	if err := c.optReply(opt, RepAck, nil); err != nil {
		return nil, err
	}
	if opt == OptGo {
		return x, nil
	}
	return nil, nil
}

func (c *conn) info(opt Opt, payload []byte) error { return c.optReply(opt, RepInfo, payload) }
