// TLS: the FORCEDTLS gate before STARTTLS, the STARTTLS upgrade with its full reset, and the
// authorisation check after the TLS handshake. What each refusal sends and logs is what
// qemu-nbd 7.2 does (docs/tls.md, docs/hostile-clients.md).
package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
)

// tlsRefusal ends a handshake for a TLS reason. Error is the whole text qemu-nbd prints after
// "option negotiation failed: " for the same case. It deliberately does not unwrap to the
// Go error behind it (logged at debug level instead), so that nothing rewords it as a socket
// error; timedOut records a handshake cut off by the handshake limit.
type tlsRefusal struct {
	result   HandshakeResult
	msg      string
	timedOut bool
}

func (e *tlsRefusal) Error() string { return e.msg }

// tlsRequired reports whether this connection must start TLS before anything else.
func (c *conn) tlsRequired() bool { return c.srv.Config.TLSConfig != nil && !c.tlsOn }

// optionBeforeTLS answers an option received while TLS is required but not yet started, as
// qemu-nbd does: STARTTLS starts it; EXPORT_NAME (which has no error reply) and any option
// from a client without NBD_FLAG_C_FIXED_NEWSTYLE close the connection; every other
// option, ABORT included, gets NBD_REP_ERR_TLS_REQD, and the connection stays open except
// after ABORT.
func (c *conn) optionBeforeTLS(opt Opt, o *optReader, n *negotiation) error {
	n.tlsRefused = true
	refuse := func(format string, args ...any) error {
		return &tlsRefusal{result: HandshakeTLSRequired, msg: fmt.Sprintf(format, args...)}
	}
	if !n.fixed {
		return refuse("Unsupported option %#x", uint32(opt))
	}
	switch opt {
	case OptStartTLS:
		if o.left > 0 {
			// A client that cannot start TLS correctly is dropped.
			if err := o.skip(); err != nil {
				return err
			}
			c.optError(opt, RepErrInvalid, "option 'starttls' has unexpected length")
			return refuse("option 'starttls' has unexpected length")
		}
		return c.startTLS(n)
	case OptExportName:
		return refuse("Option %#x not permitted before TLS", uint32(opt))
	}
	if err := o.skip(); err != nil {
		return err
	}
	if err := c.optError(opt, RepErrTLSReqd, "Option %#x not permitted before TLS", uint32(opt)); err != nil && opt != OptAbort {
		return err
	}
	if opt == OptAbort {
		return errAbort
	}
	return nil
}

// optStartTLS answers STARTTLS once TLS is running or when it is not configured.
func (c *conn) optStartTLS(o *optReader, n *negotiation) error {
	const opt = OptStartTLS
	switch {
	case o.left > 0:
		if err := o.skip(); err != nil {
			return err
		}
		return c.optError(opt, RepErrInvalid, "option 'starttls' has unexpected length")
	case c.tlsOn:
		return c.optError(opt, RepErrInvalid, "TLS already enabled")
	}
	// NOTLS mode: "If the server receives NBD_OPT_STARTTLS it MUST respond with
	// NBD_REP_ERR_POLICY (if it does not support TLS for policy reasons)".
	n.refused = true
	return c.optError(opt, RepErrPolicy, "TLS not configured")
}

// startTLS acknowledges STARTTLS, runs the TLS handshake under the handshake deadline
// already set on the socket, checks the client's authorisation, and switches the
// connection to the TLS session with every negotiated result reset.
//
// Bytes the client pipelined after the STARTTLS request are not options any more: they are
// the first bytes the TLS layer reads, so plaintext there fails the handshake ("An
// unexpected TLS packet was received", as with qemu-nbd) and is never taken as
// TLS-protected data (CVE-2021-3716).
func (c *conn) startTLS(n *negotiation) error {
	if err := c.optReply(OptStartTLS, RepAck, nil); err != nil {
		return err
	}
	cfg := c.srv.Config.TLSConfig()
	if cfg == nil {
		return &tlsRefusal{result: HandshakeTLSFailed, msg: "TLS handshake failed: no credentials"}
	}
	sock := &tlsSocket{Conn: c.nc, r: c.br}
	tc := tls.Server(sock, cfg)
	if err := tc.Handshake(); err != nil {
		c.srv.log.Debug("nbd: TLS handshake failed", "remote", c.remote, "err", err)
		return &tlsRefusal{result: HandshakeTLSFailed, msg: gnutlsText(err),
			timedOut: errors.Is(err, os.ErrDeadlineExceeded)}
	}
	if auth := c.srv.Config.Authorize; auth != nil {
		if err := auth(tc.ConnectionState()); err != nil {
			return &tlsRefusal{result: HandshakeAuthzDenied, msg: err.Error()}
		}
	}
	c.wire = tc
	c.tlsSock = sock
	c.tlsOn = true
	c.br = bufio.NewReaderSize(tc, readBufferSize)
	n.resetForTLS()
	c.srv.log.Debug("nbd: TLS started", "remote", c.remote,
		"version", tls.VersionName(tc.ConnectionState().Version))
	return nil
}

// tlsSocket is the socket under a TLS session. It reads through the plaintext reader, so
// that nothing it buffered is skipped or taken out of order: the TLS layer sees the byte
// stream exactly as the client sent it. Once transmission starts, the writer goroutine turns
// on write buffering: the TLS records of a batch of replies (crypto/tls writes each record
// separately) then leave in a few large writes, flushed at the end of each batch.
type tlsSocket struct {
	net.Conn
	r io.Reader
	w *bufio.Writer // nil: records go straight to the socket (the handshake)

	stage []byte // plaintext gathered into one record (tlswrite.go)
}

func (s *tlsSocket) Read(p []byte) (int, error) { return s.r.Read(p) }

func (s *tlsSocket) Write(p []byte) (int, error) {
	if s.w != nil {
		return s.w.Write(p)
	}
	return s.Conn.Write(p)
}

// tlsWriteBuffer is the write buffer under TLS: sixteen maximum-size records, so that a
// large READ reply leaves in a few system calls.
const tlsWriteBuffer = 256 << 10

// bufferWrites turns on write buffering; the writer goroutine calls it before its first write.
func (s *tlsSocket) bufferWrites() {
	s.w = bufio.NewWriterSize(s.Conn, tlsWriteBuffer)
	s.stage = make([]byte, 0, tlsRecordPlain)
}

// flush sends what is buffered.
func (s *tlsSocket) flush() error {
	if s.w == nil {
		return nil
	}
	return s.w.Flush()
}
