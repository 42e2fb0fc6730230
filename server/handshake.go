// Fixed-newstyle handshake: the greeting, client flags, the option loop with its limits, and
// the negotiation state and its reset when TLS starts (tls.go).
package server

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// negotiation is the state options build up before GO. Everything in it must be reset when
// TLS starts ("the server MUST NOT preserve any negotiation state ... issued before this
// command"; CVE-2021-3716).
type negotiation struct {
	fixed    bool // the client set NBD_FLAG_C_FIXED_NEWSTYLE (TLS will require it)
	noZeroes bool // the client set NBD_FLAG_C_NO_ZEROES
	mode     replyMode

	metaExport *export // export named by the last SET_META_CONTEXT, nil if none
	metas      []metaContext

	options int // options received so far

	// failure is qemu-nbd's text for how the handshake failed, when the failing step set it;
	// otherwise it follows from the error (see failureText). greetingFailed marks a failure
	// to send the greeting, which qemu-nbd words apart.
	failure        string
	greetingFailed bool

	// refused is set once the server turned down what the client asked for (an export that
	// is not there, TLS it cannot have): a client that then gives up (NBD_OPT_ABORT, as
	// libnbd and qemu do, or a close) was rejected, not a client that changed its mind.
	refused bool
	// tlsRefused is set once an option was refused because TLS had not started.
	tlsRefused bool
}

// resetForTLS drops every negotiation result once TLS starts ("the server MUST NOT preserve
// any negotiation state ... issued before this command"): only the client's handshake flags
// and the count of options, which bounds the whole handshake, remain.
func (n *negotiation) resetForTLS() {
	*n = negotiation{fixed: n.fixed, noZeroes: n.noZeroes, options: n.options}
}

// transmissionFlags is what INFO, GO and EXPORT_NAME advertise for x in this negotiation.
func (n *negotiation) transmissionFlags(x *export, opt Opt) TransmissionFlags {
	f := x.flags
	if n.mode >= modeStructured {
		f |= FlagSendDF
	}
	// qemu's rule: advertise the block-status payload with extended headers when contexts are
	// selected for this export (or to NBD_OPT_INFO, which cannot know yet).
	if n.mode == modeExtended && ((len(n.metas) > 0 && n.metaExport == x) || opt == OptInfo) {
		f |= FlagBlockStatusPayload
	}
	return f
}

// Sentinels that end the handshake without an export.
var (
	errAbort    = errors.New("nbd: client aborted the handshake")
	errShutdown = errors.New("nbd: server shutting down")
)

// maxInfoOptionLen is the content bound of INFO and GO: name length, a 4096-byte name, the
// request count and 65535 requests.
const maxInfoOptionLen = 4 + MaxStringLen + 2 + 2*0xffff

// handshake negotiates until GO or EXPORT_NAME selects an export (ok) or the connection must
// close. It reports the outcome to ServerHooks.
func (c *conn) handshake() (x *export, n *negotiation, ok bool) {
	s := c.srv
	if lim := s.handshakeLimit(); lim > 0 {
		c.nc.SetDeadline(time.Now().Add(lim))
	}
	n = &negotiation{}
	var err error
	if s.shuttingDown() {
		// Shutdown began before this connection's deadline was set; its read-deadline
		// wake-up may have been overwritten above.
		err = errShutdown
	} else {
		x, err = c.negotiate(n)
	}
	res := c.classify(err, n)
	name := ""
	if x != nil {
		name = x.Name
	}
	if h := s.Config.Hooks; h != nil {
		h.Handshake(name, res)
	}
	if err != nil {
		level := s.log.Debug
		if res == HandshakeRejected {
			level = s.log.Info
		}
		level("nbd: handshake ended", "remote", c.remote, "result", res, "err", err)
		if n.greetingFailed {
			c.reportClient(true, prefixGreeting, ioText(err, eofData))
		} else {
			c.reportClient(true, prefixNegotiation, failureText(err, n))
		}
		return nil, nil, false
	}
	c.nc.SetDeadline(time.Time{})
	s.log.Debug("nbd: client entered transmission", "remote", c.remote, "export", name,
		"mode", n.mode)
	return x, n, true
}

// failureText is qemu-nbd's text for a failed handshake: none for NBD_OPT_ABORT or a
// shutdown, the TLS refusal's or the violation's own words, or the read error's.
func failureText(err error, n *negotiation) string {
	var pe *protocolError
	var tr *tlsRefusal
	switch {
	case n.failure != "":
		return n.failure
	case errors.Is(err, errAbort), errors.Is(err, errShutdown):
		return ""
	case errors.As(err, &tr):
		return tr.msg
	case errors.As(err, &pe):
		return pe.msg
	}
	return ioText(err, eofData)
}

// classify turns the handshake's end into a HandshakeResult.
func (c *conn) classify(err error, n *negotiation) HandshakeResult {
	var pe *protocolError
	var tr *tlsRefusal
	switch {
	case err == nil:
		return HandshakeOK
	case errors.As(err, &tr):
		if tr.timedOut {
			if c.srv.shuttingDown() {
				return HandshakeAborted
			}
			return HandshakeTimeout // a TLS handshake that stalled until the limit
		}
		return tr.result
	case errors.Is(err, errShutdown):
		return HandshakeAborted
	case errors.Is(err, errAbort) && n.tlsRefused:
		return HandshakeTLSRequired
	case errors.Is(err, errAbort):
		if n.refused {
			return HandshakeRejected
		}
		return HandshakeAborted
	case errors.As(err, &pe):
		return HandshakeRejected
	case errors.Is(err, os.ErrDeadlineExceeded):
		if c.srv.shuttingDown() {
			return HandshakeAborted
		}
		return HandshakeTimeout
	}
	return HandshakeError
}

func (c *conn) negotiate(n *negotiation) (*export, error) {
	s := c.srv
	// S: NBDMAGIC | IHAVEOPT | handshake flags
	g := writeBuf(c.scratch[:0]).u64(MagicNBD).u64(MagicIHaveOpt).u16(uint16(FlagFixedNewstyle | FlagNoZeroes))
	if _, err := c.wire.Write(g); err != nil {
		n.greetingFailed = true
		return nil, err
	}
	var b [optHeaderLen]byte
	if _, err := io.ReadFull(c.br, b[:4]); err != nil {
		n.failure = "Failed to read flags: " + ioText(err, eofData)
		if err == io.EOF {
			return nil, errAbort // a port probe
		}
		return nil, err
	}
	cf := ClientFlags(be.Uint32(b[:4]))
	if cf&^knownClientFlags != 0 {
		// "the server MUST drop the TCP connection if the client sets an unknown flag"
		return nil, violation("Unknown client flags %#x received", uint32(cf))
	}
	n.fixed = cf&FlagCFixedNewstyle != 0
	n.noZeroes = cf&FlagCNoZeroes != 0

	for {
		if k, err := io.ReadFull(c.br, b[:]); err != nil {
			// qemu-nbd reads the magic, the option and its length one by one.
			field := "opts magic"
			if k >= 12 {
				field = "option length"
			} else if k >= 8 {
				field = "option"
			}
			n.failure = "Failed to read " + field + ": " + ioText(err, eofData)
			if err == io.EOF {
				return nil, errAbort // a clean close between options
			}
			return nil, err
		}
		if n.options >= s.maxOptions() {
			return nil, violation("more than %d options without GO", s.maxOptions())
		}
		n.options++
		r := readBuf(b[:])
		if magic := r.u64(); magic != MagicIHaveOpt {
			return nil, violation("Bad magic received")
		}
		opt, length := Opt(r.u32()), r.u32()
		if limit := c.optionLimit(opt); length > limit {
			// CVE-2017-15119: never read and discard gigabytes of option payload.
			return nil, violation("len (%d ) is larger than max len (%d)", length, limit)
		}
		o := &optReader{br: c.br, left: length}
		// A client without NBD_FLAG_C_FIXED_NEWSTYLE still gets fixed-newstyle replies
		// ("Servers MAY choose to honour fixed newstyle from clients that didn't set this
		// bit"): a true non-fixed client sends only EXPORT_NAME, which has no reply header,
		// and some clients (go-nbd's List) send other options without the bit.
		if s.shuttingDown() {
			if err := o.skip(); err != nil {
				return nil, err
			}
			if opt == OptAbort {
				c.optReply(opt, RepAck, nil)
				return nil, errAbort
			}
			if opt != OptExportName {
				c.optError(opt, RepErrShutdown, "server is shutting down")
			}
			return nil, errShutdown
		}
		x, err := c.option(opt, o, n)
		if err != nil || x != nil {
			return x, err
		}
	}
}

// optionLimit is the largest payload accepted for opt: the content bound where the content
// bounds it, the configured limit otherwise.
func (c *conn) optionLimit(opt Opt) uint32 {
	switch opt {
	case OptExportName:
		return MaxStringLen
	case OptInfo, OptGo:
		return max(maxInfoOptionLen, c.srv.maxOptionLen())
	}
	return c.srv.maxOptionLen()
}

// option handles one option; a non-nil export means transmission starts.
func (c *conn) option(opt Opt, o *optReader, n *negotiation) (*export, error) {
	if c.tlsRequired() {
		return nil, c.optionBeforeTLS(opt, o, n)
	}
	switch opt {
	case OptExportName:
		return c.optExportName(o, n)
	case OptAbort:
		// "a server SHOULD ignore any data sent by the client rather than rejecting the
		// request as invalid"; the client may already be gone, so write errors don't matter.
		if err := o.skip(); err != nil {
			return nil, err
		}
		c.optReply(opt, RepAck, nil)
		return nil, errAbort
	case OptList:
		return nil, c.optList(o)
	case OptStartTLS:
		return nil, c.optStartTLS(o, n)
	case OptInfo, OptGo:
		return c.optInfoGo(opt, o, n)
	case OptStructuredReply:
		return nil, c.optStructuredReply(o, n)
	case OptListMetaContext, OptSetMetaContext:
		return nil, c.optMetaContext(opt, o, n)
	case OptExtendedHeaders:
		return nil, c.optExtendedHeaders(o, n)
	}
	// "Servers that receive messages which they do not implement MUST reply to them with
	// NBD_REP_ERR_UNSUP, and MUST NOT fail to parse the next message received."
	if err := o.skip(); err != nil {
		return nil, err
	}
	return nil, c.optError(opt, RepErrUnsup, "option %v not supported", opt)
}

func (c *conn) optStructuredReply(o *optReader, n *negotiation) error {
	const opt = OptStructuredReply
	switch {
	case o.left > 0:
		if err := o.skip(); err != nil {
			return err
		}
		return c.optError(opt, RepErrInvalid, "STRUCTURED_REPLY must not carry data")
	case n.mode == modeExtended:
		return c.optError(opt, RepErrExtHeaderReqd, "extended headers already negotiated")
	case n.mode == modeStructured:
		return c.optError(opt, RepErrInvalid, "structured replies already negotiated")
	}
	n.mode = modeStructured
	return c.optReply(opt, RepAck, nil)
}

func (c *conn) optExtendedHeaders(o *optReader, n *negotiation) error {
	const opt = OptExtendedHeaders
	switch {
	case o.left > 0:
		if err := o.skip(); err != nil {
			return err
		}
		return c.optError(opt, RepErrInvalid, "EXTENDED_HEADERS must not carry data")
	case c.srv.Config.NoExtendedHeaders:
		return c.optError(opt, RepErrUnsup, "extended headers disabled")
	case n.mode == modeExtended:
		return c.optError(opt, RepErrInvalid, "extended headers already negotiated")
	}
	n.mode = modeExtended
	return c.optReply(opt, RepAck, nil)
}

// optReply writes one option reply with its payload.
func (c *conn) optReply(opt Opt, rep Rep, payload []byte) error {
	b := appendOptReply(c.scratch[:0], opt, rep, uint32(len(payload)))
	b = append(b, payload...)
	_, err := c.wire.Write(b)
	c.scratch = b[:0]
	return err
}

// optError writes an error reply whose message is at most MaxStringLen bytes
// (CVE-2020-10761).
func (c *conn) optError(opt Opt, rep Rep, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if len(msg) > MaxStringLen {
		msg = msg[:MaxStringLen]
	}
	return c.optReply(opt, rep, []byte(msg))
}

// quote renders a client-supplied name for a message: escaped and at most ~200 bytes.
func quote(name string) string {
	if len(name) > 200 {
		name = name[:200]
	}
	return strconv.Quote(name)
}

// optReader reads an option's payload without ever reading past its declared length.
type optReader struct {
	br   io.Reader
	left uint32
	tmp  [8]byte
}

// u16 and u32 read a field; callers check o.left first.
func (o *optReader) u16() (uint16, error) {
	if _, err := io.ReadFull(o.br, o.tmp[:2]); err != nil {
		return 0, err
	}
	o.left -= 2
	return be.Uint16(o.tmp[:2]), nil
}

func (o *optReader) u32() (uint32, error) {
	if _, err := io.ReadFull(o.br, o.tmp[:4]); err != nil {
		return 0, err
	}
	o.left -= 4
	return be.Uint32(o.tmp[:4]), nil
}

// str reads n bytes (n <= o.left, n <= MaxStringLen) as a string.
func (o *optReader) str(n uint32) (string, error) {
	p := make([]byte, n)
	if _, err := io.ReadFull(o.br, p); err != nil {
		return "", err
	}
	o.left -= n
	return string(p), nil
}

// exportName reads the "name length u32 | name" that opens NBD_OPT_INFO, NBD_OPT_GO and the
// meta-context options, where tail more bytes (the count that follows the name) must remain.
// A payload too short for that, a name length running into the tail ("MUST be no larger than
// the option data length - 6" for INFO and GO), or a name longer than MaxStringLen gives bad,
// the text of an NBD_REP_ERR_INVALID reply, with the rest of the payload unread; err is a
// read error.
func (o *optReader) exportName(opt Opt, tail uint32) (name, bad string, err error) {
	if o.left < 4+tail {
		return "", fmt.Sprintf("%v payload of %d bytes is too short", opt, o.left), nil
	}
	n, err := o.u32()
	if err != nil {
		return "", "", err
	}
	if n > o.left-tail {
		return "", fmt.Sprintf("export name length %d exceeds the option", n), nil
	}
	if n > MaxStringLen {
		return "", fmt.Sprintf("export name longer than %d bytes", MaxStringLen), nil
	}
	name, err = o.str(n)
	return name, "", err
}

// discard drops n bytes (n <= o.left).
func (o *optReader) discard(n uint32) error {
	if _, err := io.CopyN(io.Discard, o.br, int64(n)); err != nil {
		return unexpectedEOF(err)
	}
	o.left -= n
	return nil
}

// skip drops the rest of the payload.
func (o *optReader) skip() error { return o.discard(o.left) }

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
