// TLS protocol tests: the FORCEDTLS refusals byte for byte as qemu-nbd 7.2 sends them, the
// reset and the discarded plaintext after STARTTLS, and each refused TLS client's result and
// logged reason (docs/hostile-clients.md).
package server

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// tlsServer serves the memory export with TLS required, recording handshake results.
func tlsServer(t *testing.T, ca *testCA, cfg Config) (*testServer, *hookRecorder) {
	t.Helper()
	h := newHookRecorder()
	sc := ca.serverTLS()
	cfg.TLSConfig = func() *tls.Config { return sc }
	cfg.Hooks = h
	return hostileServerTLS(t, ca, cfg), h
}

// hostileServerTLS is hostileServer for a TLS server: at cleanup a TLS client must still be
// served.
func hostileServerTLS(t *testing.T, ca *testCA, cfg Config) *testServer {
	ts := startServer(t, cfg)
	t.Cleanup(func() {
		if t.Failed() {
			return
		}
		c := ts.dial()
		c.sendFlags(FlagCFixedNewstyle | FlagCNoZeroes)
		cert := ca.client("client1", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		c.startTLS(ca.clientTLS(&cert))
		c.wantRep(c.opt(OptGo, infoPayload("")), RepAck)
		c.wantErrno(c.read(0, 512, 0), 0)
		c.disc()
	})
	return ts
}

// startTLS sends STARTTLS, expects NBD_REP_ACK and runs the client side of the handshake; it
// returns the handshake's error.
func (c *tclient) startTLS(cfg *tls.Config) error {
	c.t.Helper()
	c.wantRep(c.opt(OptStartTLS, nil), RepAck)
	tc := tls.Client(c.nc, cfg)
	err := tc.Handshake()
	c.nc, c.br = tc, bufio.NewReader(tc)
	return err
}

// wantLog waits until the server log has a handshake end with this reason.
func (ts *testServer) wantLog(t *testing.T, reason string) {
	t.Helper()
	waitFor(t, "log line "+reason, func() bool { return strings.Contains(ts.logs.String(), reason) })
}

func (h *hookRecorder) wantResults(t *testing.T, want string) {
	t.Helper()
	waitFor(t, "handshake results "+want, func() bool { return h.handshakeLog() == want })
}

// Measured on qemu-nbd 7.2 with --tls-creds: each option before STARTTLS gets
// NBD_REP_ERR_TLS_REQD with "Option 0x%x not permitted before TLS", LIST lists nothing, and
// the connection stays open.
func TestTLSRequiredRefusesEveryOptionAsQemu(t *testing.T) {
	ca := newTestCA(t, "CA")
	ts, h := tlsServer(t, ca, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle | FlagCNoZeroes)
	for _, tc := range []struct {
		opt     Opt
		payload []byte
	}{
		{OptList, nil}, {OptInfo, infoPayload("")}, {OptGo, infoPayload("")},
		{OptStructuredReply, nil}, {OptListMetaContext, metaPayload("", MetaBaseAllocation)},
		{OptSetMetaContext, metaPayload("", MetaBaseAllocation)}, {OptExtendedHeaders, nil}, {99, []byte("xyz")},
	} {
		rs := c.opt(tc.opt, tc.payload)
		want := fmt.Sprintf("Option %#x not permitted before TLS", uint32(tc.opt))
		if len(rs) != 1 || rs[0].rep != RepErrTLSReqd || string(rs[0].data) != want {
			t.Fatalf("%v: replies %+v, want one ERR_TLS_REQD %q", tc.opt, rs, want)
		}
	}
	// ABORT is refused too, and then the server hangs up.
	rs := c.opt(OptAbort, nil)
	if rs[0].rep != RepErrTLSReqd || string(rs[0].data) != "Option 0x2 not permitted before TLS" {
		t.Fatalf("ABORT: %+v", rs)
	}
	c.expectClosed()
	h.wantResults(t, ":tls_required")
}

// EXPORT_NAME before TLS, a client without FIXED_NEWSTYLE, and STARTTLS carrying data are
// dropped at once, with qemu-nbd's reasons.
func TestTLSRequiredClosesAsQemu(t *testing.T) {
	ca := newTestCA(t, "CA")
	ts, h := tlsServer(t, ca, Config{})

	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.sendOpt(OptExportName, []byte(""))
	c.expectClosed()
	ts.wantLog(t, "Option 0x1 not permitted before TLS")

	c = ts.dial()
	c.sendFlags(0)
	c.sendOpt(OptList, nil)
	c.expectClosed()
	ts.wantLog(t, "Unsupported option 0x3")

	c = ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	rs := c.opt(OptStartTLS, []byte{0})
	if rs[0].rep != RepErrInvalid || string(rs[0].data) != "option 'starttls' has unexpected length" {
		t.Fatalf("STARTTLS with data: %+v", rs)
	}
	c.expectClosed()
	h.wantResults(t, ":tls_required,:tls_required,:tls_required")
}

// After STARTTLS the client negotiates from scratch; STARTTLS again is refused as qemu-nbd
// refuses it.
func TestStartTLSThenServe(t *testing.T) {
	ca := newTestCA(t, "CA")
	ts, h := tlsServer(t, ca, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle | FlagCNoZeroes)
	cert := ca.client("client1", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err := c.startTLS(ca.clientTLS(&cert)); err != nil {
		t.Fatal(err)
	}
	rs := c.opt(OptStartTLS, nil)
	if rs[0].rep != RepErrInvalid || string(rs[0].data) != "TLS already enabled" {
		t.Fatalf("second STARTTLS: %+v", rs)
	}
	rs = c.opt(OptStartTLS, []byte{1})
	if rs[0].rep != RepErrInvalid || string(rs[0].data) != "option 'starttls' has unexpected length" {
		t.Fatalf("STARTTLS with data after TLS: %+v", rs)
	}
	rs = c.opt(OptList, nil)
	if len(rs) != 2 || rs[0].rep != RepServer {
		t.Fatalf("LIST over TLS: %+v", rs)
	}
	c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
	c.mode = modeStructured
	c.wantRep(c.opt(OptGo, infoPayload("")), RepAck)
	payload := []byte(strings.Repeat("tls!", 128))
	c.wantErrno(c.writeAt(4096, payload, 0), 0)
	r := c.read(4096, 512, 0)
	c.wantErrno(r, 0)
	if string(r.data) != string(payload) {
		t.Fatalf("read back %q", r.data[:16])
	}
	c.disc()
	h.wantResults(t, ":ok")
}

// Options pipelined in plaintext right after STARTTLS are fed to the TLS layer, which
// refuses them (qemu-nbd: "An unexpected TLS packet was received."); they are never answered.
func TestStartTLSPipelinedPlaintextIsNotRead(t *testing.T) {
	ca := newTestCA(t, "CA")
	ts, h := tlsServer(t, ca, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	b := writeBuf(nil).u64(MagicIHaveOpt).u32(uint32(OptStartTLS)).u32(0).
		u64(MagicIHaveOpt).u32(uint32(OptList)).u32(0)
	c.write(b)
	if r := c.readOpt(); r.opt != OptStartTLS || r.rep != RepAck {
		t.Fatalf("STARTTLS: %+v", r)
	}
	c.expectClosed() // no LIST reply: EOF right after the ACK
	ts.wantLog(t, "TLS handshake failed: An unexpected TLS packet was received.")
	h.wantResults(t, ":tls_failed")
}

// Each refused TLS client: its handshake result and the reason logged, in qemu-nbd's words.
func TestTLSRefusedClients(t *testing.T) {
	ca, evil := newTestCA(t, "CA"), newTestCA(t, "Evil CA")
	now := time.Now()
	for _, tc := range []struct {
		name   string
		cert   *tls.Certificate
		result string
		reason string
	}{
		{"no certificate", nil, "tls_failed", msgNoCertificate},
		{"untrusted CA", ptr(evil.client("client1", now.Add(-time.Hour), now.Add(time.Hour))), "tls_failed", msgNotTrusted},
		{"expired", ptr(ca.client("client1", now.Add(-2*time.Hour), now.Add(-time.Hour))), "tls_failed", msgNotTrusted},
		{"not yet valid", ptr(ca.client("client1", now.Add(time.Hour), now.Add(2*time.Hour))), "tls_failed", msgNotTrusted},
		{"authz denied", ptr(ca.client("client2", now.Add(-time.Hour), now.Add(time.Hour))), "authz_denied",
			"TLS x509 authz check for C=GB,CN=client2 is denied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts, h := tlsServer(t, ca, Config{Authorize: func(st tls.ConnectionState) error {
				if cn := st.PeerCertificates[0].Subject.CommonName; cn != "client1" {
					return fmt.Errorf("TLS x509 authz check for C=GB,CN=%s is denied", cn)
				}
				return nil
			}})
			c := ts.dial()
			c.sendFlags(FlagCFixedNewstyle)
			err := c.startTLS(ca.clientTLS(tc.cert))
			if err == nil {
				// TLS 1.3: the client finishes before the server has checked its
				// certificate; the refusal shows on the next read.
				c.sendOpt(OptList, nil)
				c.expectClosed()
			}
			ts.wantLog(t, tc.reason)
			h.wantResults(t, ":"+tc.result)
		})
	}
}

func ptr[T any](v T) *T { return &v }

// Garbage instead of a ClientHello, a hang-up mid-handshake, and a handshake that stalls
// until the handshake limit.
func TestTLSHandshakeGarbageEOFAndStall(t *testing.T) {
	ca := newTestCA(t, "CA")
	// Garbage: a handshake limit far longer than any scheduling delay, so that the failure
	// is the TLS layer's, never the limit's (a 300 ms limit fired first under load).
	ts, h := tlsServer(t, ca, Config{HandshakeLimit: time.Minute})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptStartTLS, nil), RepAck)
	c.write([]byte("GET / HTTP/1.1\r\n\r\n"))
	c.expectClosed()
	h.wantResults(t, ":tls_failed")
	ts.wantLog(t, msgTLSUnexpected)

	// Stall: the limit ends it. 2 s leaves a loaded machine time for the steps before it.
	ts, h = tlsServer(t, ca, Config{HandshakeLimit: 2 * time.Second})
	c = ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptStartTLS, nil), RepAck)
	c.write([]byte{0x16, 0x03, 0x01}) // the start of a record header, then silence
	c.expectClosed()
	h.wantResults(t, ":timeout")
	ts.wantLog(t, msgTLSTerminated)
}

// Without TLS configured, STARTTLS is refused as qemu-nbd refuses it, and the client goes on.
func TestStartTLSWithoutTLSAsQemu(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	rs := c.opt(OptStartTLS, nil)
	if rs[0].rep != RepErrPolicy || string(rs[0].data) != "TLS not configured" {
		t.Fatalf("STARTTLS: %+v", rs)
	}
	rs = c.opt(OptStartTLS, []byte{0})
	if rs[0].rep != RepErrInvalid || string(rs[0].data) != "option 'starttls' has unexpected length" {
		t.Fatalf("STARTTLS with data: %+v", rs)
	}
	c.wantRep(c.opt(OptList, nil), RepAck)
}

func TestGnutlsTextFallsBackToGoText(t *testing.T) {
	if got := gnutlsText(errors.New("tls: something new")); got != "TLS handshake failed: tls: something new" {
		t.Fatalf("got %q", got)
	}
}

// The socket errors under a handshake, worded as GnuTLS words them in qemu-nbd's lines.
func TestGnutlsTextSocketErrors(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{io.EOF, msgTLSTerminated},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, msgTLSTerminated},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, msgTLSPull},
		{&net.OpError{Op: "write", Err: syscall.EPIPE}, msgTLSPush},
		{fmt.Errorf("serial 7: %w", ErrCertificateRevoked), msgRevoked},
	} {
		if got := gnutlsText(tc.err); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.err, got, tc.want)
		}
	}
}
