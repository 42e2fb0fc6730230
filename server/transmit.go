// The transmission-phase reader: decode each request header, validate it (the spec's errno
// rules), consume its payload, and hand it to a worker within the connection's budget.
package server

import (
	"errors"
	"fmt"
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
				// A clean close between requests is no failure; anything else is.
				c.srv.log.Debug("nbd: read failed", "remote", c.remote, "err", err)
				c.reportClient(false, prefixDisconnect, ioText(err, eofBytes))
			}
			return
		}
		req, ok := decodeRequest(hdr, ext)
		if !ok {
			c.srv.log.Info("nbd: bad request magic; disconnecting", "remote", c.remote)
			if ext {
				c.reportClient(false, prefixDisconnect, fmt.Sprintf("invalid magic (got %#x)", be.Uint32(hdr)))
				c.abort()
				return
			}
			// qemu-nbd 7.2 answers EINVAL to the header's cookie, then closes.
			j := job{req: req}
			c.rejectRequest(&j, EINVAL, fmt.Sprintf("invalid magic (got %#x)", be.Uint32(hdr)))
			c.reportClient(false, prefixDisconnect, msgIntermediate)
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
			c.handleFailed(err)
			return
		}
	}
}

// handleFailed ends the connection after handle failed with err, reporting it as qemu-nbd
// does.
func (c *conn) handleFailed(err error) {
	var pe *protocolError
	var we *writeDataError
	switch {
	case errors.As(err, &pe):
		c.srv.log.Info("nbd: disconnecting client", "remote", c.remote, "err", err)
		c.reportClient(false, prefixDisconnect, pe.msg)
		c.abort()
	case errors.Is(err, errUnreadPayload):
		c.srv.log.Info("nbd: disconnecting client", "remote", c.remote, "err", err)
		c.reportClient(false, prefixDisconnect, msgIntermediate)
	case errors.Is(err, errClosed):
	case errors.As(err, &we):
		if msg := ioText(we.err, eofData); msg != "" {
			c.reportClient(false, prefixDisconnect+"Failed to read CMD_WRITE data: ", msg)
		}
	default:
		c.reportClient(false, prefixDisconnect, ioText(err, eofData))
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
	j := job{req: *req}
	if c.hooks != nil {
		if _, ok := opOf(req.Type); ok {
			j.start = time.Now() // reported to the hooks by started, once the payload is in
		}
	}

	errno, msg := c.check(&j, payload)
	if payload > MaxPayload {
		// qemu-nbd answers, then disconnects rather than read (or skip) the payload.
		if errno == 0 {
			errno, msg = EINVAL, "payload larger than the maximum block size"
		}
		c.started(&j)
		c.rejectRequest(&j, errno, msg)
		return errUnreadPayload
	}
	if errno == 0 && req.Type == CmdBlockStatus {
		if payload > 0 {
			var err error
			if errno, msg, err = c.readStatusPayload(&j, payload); err != nil {
				return err
			}
			payload = 0
			if errno == 0 {
				errno, msg = c.checkRest(&j.req)
			}
		} else {
			j.metas = c.metas
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
			return &writeDataError{unexpectedEOF(err)}
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

var (
	errClosed = errors.New("nbd: connection closed")
	// errUnreadPayload ends a connection whose last request's payload was left unread: the
	// replies already queued still go out, then the connection closes.
	errUnreadPayload = errors.New("nbd: request payload over the maximum left unread")
)

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

// check applies the request rules in qemu-nbd 7.2's order and with its texts
// (docs/qemu-nbd-fidelity.md): the extended-header payload rules (qemu-nbd 7.2 has no
// extended headers), the READ/WRITE/CACHE length limit, read-only, then (except for a
// BLOCK_STATUS whose effect length sits in its payload) checkRest.
func (c *conn) check(j *job, payload uint64) (Errno, string) {
	req := &j.req
	ext := c.mode == modeExtended
	if ext {
		statusPayload := req.Type == CmdBlockStatus && c.tflags&FlagBlockStatusPayload != 0
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
	switch req.Type {
	case CmdRead, CmdWrite, CmdCache:
		if req.Length > MaxPayload {
			return EINVAL, fmt.Sprintf("len (%d ) is larger than max len (%d)", req.Length, MaxPayload)
		}
	}
	if c.x.ReadOnly && (req.Type == CmdWrite || req.Type == CmdTrim || req.Type == CmdWriteZeroes) {
		// qemu-nbd 7.2 answers NBD_EINVAL here, where the spec says it "SHOULD return
		// NBD_EPERM": clients (libnbd's tests among them) are written against qemu-nbd.
		return EINVAL, "Export is read-only"
	}
	if req.Type == CmdBlockStatus && payload > 0 {
		return 0, "" // checkRest runs once the payload gave the effect length
	}
	return c.checkRest(req)
}

// checkRest is the rest of qemu-nbd's checks: the range, the flags, then the conditions of
// each command. Requests not aligned to the minimum block size are accepted, as qemu-nbd
// accepts them (the backend copes with any alignment).
func (c *conn) checkRest(req *Request) (Errno, string) {
	size := c.x.size
	if req.Offset > size || req.Length > size-req.Offset {
		// qemu-nbd 7.2 answers NBD_EINVAL for every command, writes included (the spec's
		// NBD_ENOSPC for writes is a SHOULD).
		return EINVAL, fmt.Sprintf("operation past EOF; From: %d, Len: %d, Size: %d",
			req.Offset, req.Length, size)
	}
	if bad := req.Flags &^ c.validFlags(req); bad != 0 {
		// "It also SHOULD return NBD_EINVAL if it receives a request with a flag not
		// explicitly documented as applicable to the given request."
		return EINVAL, fmt.Sprintf("unsupported flags for command %s (got %#x)",
			qemuCmdName(req.Type), uint16(req.Flags))
	}
	switch req.Type {
	case CmdRead, CmdWrite, CmdFlush, CmdCache, CmdWriteZeroes:
	case CmdTrim:
		if c.tflags&FlagSendTrim == 0 {
			return EINVAL, "TRIM not supported on this export"
		}
	case CmdBlockStatus:
		if req.Length == 0 {
			// At least one nonzero extent must answer a successful BLOCK_STATUS.
			return EINVAL, "need non-zero length"
		}
		if len(c.metas) == 0 {
			// "Servers SHOULD reply with NBD_EINVAL to clients sending NBD_CMD_BLOCK_STATUS
			// without selecting at least one metadata context."
			return EINVAL, "CMD_BLOCK_STATUS not negotiated"
		}
	default:
		// "The server SHOULD return NBD_EINVAL if it receives an unknown command."
		return EINVAL, fmt.Sprintf("invalid request type (%d) received", uint16(req.Type))
	}
	return 0, ""
}

// validFlags is the set of flags req may carry in this connection.
func (c *conn) validFlags(req *Request) CmdFlags {
	valid := CmdFlagFUA
	switch req.Type {
	case CmdRead:
		if c.tflags&FlagSendDF != 0 {
			valid |= CmdFlagDF
		}
	case CmdWrite:
		if c.mode == modeExtended {
			valid |= CmdFlagPayloadLen
		}
	case CmdWriteZeroes:
		valid |= CmdFlagNoHole
		if c.tflags&FlagSendFastZero != 0 {
			valid |= CmdFlagFastZero
		}
	case CmdBlockStatus:
		valid |= CmdFlagReqOne
		if c.tflags&FlagBlockStatusPayload != 0 {
			valid |= CmdFlagPayloadLen
		}
	}
	return valid
}

// qemuCmdName is the command's name in qemu-nbd's messages.
func qemuCmdName(t Cmd) string {
	switch t {
	case CmdRead:
		return "read"
	case CmdWrite:
		return "write"
	case CmdDisc:
		return "disconnect"
	case CmdFlush:
		return "flush"
	case CmdTrim:
		return "trim"
	case CmdCache:
		return "cache"
	case CmdWriteZeroes:
		return "write zeroes"
	case CmdBlockStatus:
		return "block status"
	}
	return "<unknown>"
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
