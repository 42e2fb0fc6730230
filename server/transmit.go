// The transmission-phase reader: decode each request header, validate it (the spec's errno
// rules), consume its payload, and hand it to a worker within the connection's budget.
package server

import (
	"errors"
	"io"
	"time"
)

// opOf maps a command to the Op reported to hooks.
func opOf(t Cmd) (Op, bool) {
	switch t {
	case CmdRead:
		return OpRead, true
	case CmdWrite:
		return OpWrite, true
	case CmdFlush:
		return OpFlush, true
	case CmdTrim:
		return OpTrim, true
	case CmdCache:
		return OpCache, true
	case CmdWriteZeroes:
		return OpWriteZeroes, true
	case CmdBlockStatus:
		return OpBlockStatus, true
	case CmdDisc:
		return OpDisc, true
	}
	return 0, false
}

// job is one validated request on its way to a worker.
type job struct {
	req   Request
	buf   *[]byte       // WRITE payload or READ destination
	cost  int64         // budget bytes held
	metas []metaContext // BLOCK_STATUS: contexts to report
	start time.Time     // for hooks; zero when there are none
}

// readRequests is the reader loop. It returns on NBD_CMD_DISC (the deferred endTransmission
// then finishes every outstanding request before the socket closes), on EOF, or on a protocol
// violation (a hard disconnect).
func (c *conn) readRequests() {
	ext := c.mode == modeExtended
	hdr := make([]byte, requestLen(ext))
	for {
		if _, err := io.ReadFull(c.br, hdr); err != nil {
			if !errors.Is(err, io.EOF) {
				c.srv.log.Debug("nbd: read failed", "remote", c.remote, "err", err)
			}
			return
		}
		req, ok := decodeRequest(hdr, ext)
		if !ok {
			c.srv.log.Info("nbd: bad request magic; disconnecting", "remote", c.remote)
			c.abort()
			return
		}
		if req.Type == CmdDisc {
			// "A client MUST NOT send anything to the server after sending an NBD_CMD_DISC
			// command": whatever follows is ignored.
			if c.hooks != nil {
				c.hooks.RequestStarted(OpDisc)
				c.hooks.RequestDone(OpDisc, 0, 0, 0)
			}
			return
		}
		if err := c.handle(&req); err != nil {
			var pe *protocolError
			if errors.As(err, &pe) {
				c.srv.log.Info("nbd: disconnecting client", "remote", c.remote, "err", err)
				c.abort()
			}
			return
		}
	}
}

// handle validates one request and either answers it at once (errors) or starts a worker.
// A returned error ends the connection.
func (c *conn) handle(req *Request) error {
	ext := c.mode == modeExtended
	var payload uint64
	if ext {
		if req.Flags&CmdFlagPayloadLen != 0 {
			payload = req.Length
		}
	} else if req.Type == CmdWrite {
		payload = req.Length
	}
	if payload > 2*MaxPayload {
		// Skipping a payload this large would be a denial of service on ourselves.
		return violation("%v payload of %d bytes", req.Type, payload)
	}
	j := job{req: *req}
	if c.hooks != nil {
		if _, ok := opOf(req.Type); ok {
			j.start = time.Now() // reported to the hooks by started, once the payload is in
		}
	}

	errno, msg := c.check(&j, payload)
	if errno == 0 && req.Type == CmdBlockStatus {
		if payload > 0 {
			var err error
			if errno, msg, err = c.readStatusPayload(&j, payload); err != nil {
				return err
			}
			payload = 0
		} else {
			j.metas = c.metas
		}
		if errno == 0 {
			errno, msg = c.checkRange(&j.req)
		}
	}
	if errno != 0 {
		if payload > 0 {
			if _, err := io.CopyN(io.Discard, c.br, int64(payload)); err != nil {
				return unexpectedEOF(err)
			}
		}
		c.started(&j)
		c.rejectRequest(&j, errno, msg)
		return nil
	}

	switch req.Type {
	case CmdRead, CmdWrite:
		j.cost = int64(req.Length)
	}
	if !c.budget.acquire(j.cost, c.closed) {
		return errClosed
	}
	if req.Type == CmdRead || req.Type == CmdWrite {
		j.buf = getBuf(int(req.Length))
	}
	if req.Type == CmdWrite {
		if _, err := io.ReadFull(c.br, *j.buf); err != nil {
			putBuf(j.buf)
			c.budget.release(j.cost)
			return unexpectedEOF(err)
		}
	}
	c.started(&j)

	c.mu.Lock()
	if c.shutting {
		c.mu.Unlock()
		putBuf(j.buf)
		c.budget.release(j.cost)
		// "The error value issued in respect of these requests and any subsequently received
		// requests SHOULD be NBD_ESHUTDOWN."
		c.rejectRequest(&j, ESHUTDOWN, "server is shutting down")
		return nil
	}
	c.inflight++
	c.workers.Add(1)
	c.mu.Unlock()
	go c.run(j)
	return nil
}

var errClosed = errors.New("nbd: connection closed")

// started reports j to the hooks once it is wholly taken off the wire, header and payload,
// so that every RequestStarted is matched by a RequestDone: a request whose client vanished
// mid-payload, or whose connection closed while it waited for budget, never ran and is
// reported neither started nor done.
func (c *conn) started(j *job) {
	if !j.start.IsZero() {
		op, _ := opOf(j.req.Type)
		c.hooks.RequestStarted(op)
	}
}

// rejectRequest answers a request that never reaches a worker.
func (c *conn) rejectRequest(j *job, errno Errno, msg string) {
	r := newReply()
	// Once structured replies are on, errorReply sends an error chunk, as READ requires: it
	// "MUST NOT use a simple reply ... (even for the case of an early NBD_EINVAL due to bad
	// flags)".
	c.errorReply(r, &j.req, errno, msg)
	c.out <- r
	c.requestFinished(j, errno)
}

// requestFinished reports a finished request to the export's hooks.
func (c *conn) requestFinished(j *job, errno Errno) {
	if c.hooks == nil || j.start.IsZero() {
		return
	}
	op, _ := opOf(j.req.Type)
	var n uint64
	if op != OpFlush {
		n = j.req.Length
	}
	c.hooks.RequestDone(op, n, time.Since(j.start), uint32(errno))
}

// check applies the spec's request rules, in qemu-nbd's order: command known, payload rules,
// read-only, flags, per-command conditions, then (except for BLOCK_STATUS, whose effect
// length may sit in its payload) range and alignment.
func (c *conn) check(j *job, payload uint64) (Errno, string) {
	req := &j.req
	ext := c.mode == modeExtended
	switch req.Type {
	case CmdRead, CmdWrite, CmdFlush, CmdTrim, CmdCache, CmdWriteZeroes, CmdBlockStatus:
	default:
		// "The server SHOULD return NBD_EINVAL if it receives an unknown command."
		return EINVAL, "unknown command " + req.Type.String()
	}
	statusPayload := req.Type == CmdBlockStatus && c.tflags&FlagBlockStatusPayload != 0
	if ext {
		if req.Type == CmdWrite && req.Flags&CmdFlagPayloadLen == 0 {
			// "With extended headers, the flag MUST be set for NBD_CMD_WRITE"; without it the
			// length is an effect length and no payload follows.
			return EINVAL, "WRITE without NBD_CMD_FLAG_PAYLOAD_LEN"
		}
		if payload > 0 && req.Type != CmdWrite && !statusPayload {
			// "for other commands, the flag will trigger an NBD_EINVAL error unless the server
			// has advertised support for an extension payload form for the command."
			return EINVAL, req.Type.String() + " does not take a payload"
		}
	}
	if payload > MaxPayload {
		return EINVAL, "payload larger than the maximum block size"
	}
	if c.x.ReadOnly && (req.Type == CmdWrite || req.Type == CmdTrim || req.Type == CmdWriteZeroes) {
		// "it SHOULD return NBD_EPERM if it receives a write or trim request on a read-only
		// export."
		return EPERM, "export is read-only"
	}
	valid := CmdFlagFUA
	switch req.Type {
	case CmdRead:
		if c.tflags&FlagSendDF != 0 {
			valid |= CmdFlagDF
		}
	case CmdWrite:
		if ext {
			valid |= CmdFlagPayloadLen
		}
	case CmdWriteZeroes:
		valid |= CmdFlagNoHole
		if c.tflags&FlagSendFastZero != 0 {
			valid |= CmdFlagFastZero
		}
	case CmdBlockStatus:
		valid |= CmdFlagReqOne
		if statusPayload {
			valid |= CmdFlagPayloadLen
		}
	}
	if bad := req.Flags &^ valid; bad != 0 {
		// "It also SHOULD return NBD_EINVAL if it receives a request with a flag not
		// explicitly documented as applicable to the given request."
		return EINVAL, "flags " + bad.String() + " not valid for " + req.Type.String()
	}
	switch req.Type {
	case CmdFlush:
		// "For a flush request, *length* and *offset* are reserved, and MUST be set to
		// all-zero."
		if req.Offset != 0 || req.Length != 0 {
			return EINVAL, "FLUSH with nonzero offset or length"
		}
		return 0, ""
	case CmdTrim:
		if c.tflags&FlagSendTrim == 0 {
			return EINVAL, "TRIM not supported on this export"
		}
	case CmdRead, CmdCache:
		if req.Length > MaxPayload {
			if req.Type == CmdRead && req.Flags&CmdFlagDF != 0 {
				// "A server MAY reject a client's request with the error NBD_EOVERFLOW if the
				// length is too large to send without fragmentation".
				return EOVERFLOW, "read too large to send unfragmented"
			}
			return EINVAL, "length larger than the maximum block size"
		}
	case CmdBlockStatus:
		if len(c.metas) == 0 {
			// "Servers SHOULD reply with NBD_EINVAL to clients sending NBD_CMD_BLOCK_STATUS
			// without selecting at least one metadata context."
			return EINVAL, "no metadata context selected"
		}
		return 0, "" // range checked once the effect length is known
	}
	return c.checkRange(req)
}

// checkRange checks offset and length against the export size.
func (c *conn) checkRange(req *Request) (Errno, string) {
	size := c.x.size
	if req.Offset > size || req.Length > size-req.Offset {
		// "The server SHOULD return NBD_ENOSPC if it receives a write request including one
		// or more sectors beyond the size of the device. ... It SHOULD return NBD_EINVAL if it
		// receives a read or trim request including one or more sectors beyond the size".
		if req.Type == CmdWrite || req.Type == CmdWriteZeroes {
			return ENOSPC, "request beyond the end of the export"
		}
		return EINVAL, "request beyond the end of the export"
	}
	if req.Type == CmdBlockStatus && req.Length == 0 {
		// At least one nonzero extent must answer a successful BLOCK_STATUS, so an empty
		// range cannot succeed.
		return EINVAL, "BLOCK_STATUS of zero length"
	}
	// A request not aligned to the advertised minimum block size is served, as qemu-nbd
	// serves it (its block layer reads and rewrites the partial blocks): the minimum is
	// advice to the client, which the spec lets a server accept.
	return 0, ""
}

// readStatusPayload consumes a BLOCK_STATUS payload (extended headers with
// NBD_FLAG_BLOCK_STATUS_PAYLOAD): "effect length u64 | context id u32 ..." selecting a subset
// of the negotiated contexts. Malformed payloads are consumed and fail with NBD_EINVAL.
func (c *conn) readStatusPayload(j *job, payload uint64) (Errno, string, error) {
	if payload < 8 || payload%4 != 0 || payload > 8+4*uint64(len(c.metas)) {
		if _, err := io.CopyN(io.Discard, c.br, int64(payload)); err != nil {
			return 0, "", unexpectedEOF(err)
		}
		return EINVAL, "malformed BLOCK_STATUS payload", nil
	}
	p := make([]byte, payload)
	if _, err := io.ReadFull(c.br, p); err != nil {
		return 0, "", unexpectedEOF(err)
	}
	b := readBuf(p)
	j.req.Length = b.u64()
	for len(b) > 0 {
		id := b.u32()
		var found *metaContext
		for i := range c.metas {
			if c.metas[i].id == id {
				found = &c.metas[i]
			}
		}
		if found == nil {
			return EINVAL, "BLOCK_STATUS payload names an unknown context", nil
		}
		for _, m := range j.metas {
			if m.id == id {
				return EINVAL, "BLOCK_STATUS payload repeats a context", nil
			}
		}
		j.metas = append(j.metas, *found)
	}
	if len(j.metas) == 0 {
		return EINVAL, "BLOCK_STATUS payload selects no context", nil
	}
	return 0, "", nil
}
