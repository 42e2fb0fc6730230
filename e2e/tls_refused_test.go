// Refused TLS clients (docs/hostile-clients.md, "TLS"), each against qnbd and qemu-nbd 7.2
// side by side: the client is refused by both, qemu-nbd's "option negotiation failed: X"
// line has the same X as qnbd's logged reason, qnbd's handshake counter moves, and both
// servers then serve a good TLS client.
package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	nbd "github.com/qnbd/qnbd/server"
)

const negotiationFailed = "option negotiation failed: "

// tlsRefusal is one row of the catalogue.
type tlsRefusal struct {
	name   string
	result string // qnbd_nbd_handshakes_total result it moves
	// limitQnbd is qnbd's --handshake-limit for the case (0: the default).
	limitQnbd int
	client    func(t *testing.T, s *server, p *testPKI)
}

func tlsRefusals() []tlsRefusal {
	nbdinfoFails := func(dir string) func(*testing.T, *server, *testPKI) {
		return func(t *testing.T, s *server, p *testPKI) {
			uri := s.URI("")
			if dir != "" {
				uri = tlsURI(s, "", dir)
			}
			if r := runCode(t, "nbdinfo", "--size", uri); r.Code == 0 {
				t.Fatalf("nbdinfo %s was served: %q", uri, r.Stdout)
			}
		}
	}
	return []tlsRefusal{
		{name: "plaintext client", result: "tls_required", client: nbdinfoFails("")},
		{name: "untrusted CA", result: "tls_failed", client: func(t *testing.T, s *server, p *testPKI) {
			nbdinfoFails(p.untrust)(t, s, p)
		}},
		{name: "expired certificate", result: "tls_failed", client: func(t *testing.T, s *server, p *testPKI) {
			nbdinfoFails(p.expired)(t, s, p)
		}},
		{name: "not yet valid certificate", result: "tls_failed", client: func(t *testing.T, s *server, p *testPKI) {
			nbdinfoFails(p.future)(t, s, p)
		}},
		{name: "revoked certificate", result: "tls_failed", client: func(t *testing.T, s *server, p *testPKI) {
			nbdinfoFails(p.revoked)(t, s, p)
		}},
		{name: "client distrusts the server", result: "tls_failed", client: func(t *testing.T, s *server, p *testPKI) {
			nbdinfoFails(p.distrust)(t, s, p)
		}},
		{name: "authz denies the DN", result: "authz_denied", client: func(t *testing.T, s *server, p *testPKI) {
			nbdinfoFails(p.other)(t, s, p)
		}},
		{name: "plaintext after STARTTLS", result: "tls_failed", client: func(t *testing.T, s *server, _ *testPKI) {
			c := dialRaw(t, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)))
			c.sendFlags(nbd.FlagCFixedNewstyle)
			c.write(append(optHeader(nbd.OptStartTLS, 0), optHeader(nbd.OptList, 0)...))
			c.wantRep(c.readOptReplies(nbd.OptStartTLS), nbd.RepAck)
			if b := c.expectClosed(); len(b) > 0 && b[0] != 0x15 { // at most a TLS alert
				t.Fatalf("the plaintext LIST was answered: %q", b)
			}
		}},
		{name: "garbage instead of a ClientHello", result: "tls_failed", client: func(t *testing.T, s *server, _ *testPKI) {
			c := dialRaw(t, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)))
			c.sendFlags(nbd.FlagCFixedNewstyle)
			c.wantRep(c.opt(nbd.OptStartTLS, nil), nbd.RepAck)
			c.write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
			c.expectClosed()
		}},
		{name: "stalled TLS handshake", result: "timeout", limitQnbd: 1, client: func(t *testing.T, s *server, _ *testPKI) {
			c := dialRaw(t, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)))
			c.sendFlags(nbd.FlagCFixedNewstyle)
			c.wantRep(c.opt(nbd.OptStartTLS, nil), nbd.RepAck)
			c.write([]byte{0x16, 0x03, 0x01}) // a record header begun, then silence
			// qemu-nbd's limit is a fixed 10 s; allow twice that.
			c.nc.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.ReadAll(c.br); err != nil {
				t.Fatalf("a stalled handshake was not cut off: %v", err)
			}
		}},
	}
}

func TestTLSRefusedClientsAsQemuNBD(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	for _, tc := range tlsRefusals() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := newRaw(t, shortTempDir(t), 1<<20)
			args := append(tlsArgs(p.server, true), "-f", "raw", img)
			qargs := append([]string{"-v"}, args...)
			if tc.limitQnbd > 0 {
				qargs = append(qargs, "--handshake-limit", strconv.Itoa(tc.limitQnbd))
			}
			q := startQnbd(t, serverConfig{Args: qargs, TCP: true, Metrics: true})
			ref := startQemuNBD(t, serverConfig{Args: args, TCP: true})

			// The readiness probe ends with ABORT, which qemu-nbd does not report (catalogue
			// T1), so everything qemu-nbd prints from here on is this client's.
			from := len(ref.Output())
			tc.client(t, ref, p)
			want := waitNegotiationLine(t, ref, from, tc.name != "plaintext client")
			tc.client(t, q, p)
			series := fmt.Sprintf(`qnbd_nbd_handshakes_total{result=%q}`, tc.result)
			waitMetric(t, q, series, 1)
			// qnbd prints qemu-nbd's line itself, under its own name (after counting the
			// handshake, and through a pipe: wait for it).
			line := "qnbd: " + negotiationFailed + want + "\n"
			for deadline := time.Now().Add(10 * time.Second); want != "" && !strings.Contains(q.Output(), line); {
				if time.Now().After(deadline) {
					t.Errorf("qemu-nbd printed %q; qnbd printed no such line:\n%s", negotiationFailed+want, q.Output())
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			for _, s := range []*server{ref, q} {
				if got := strings.TrimSpace(run(t, "nbdinfo", "--size", tlsURI(s, "", p.good))); got != "1048576" {
					t.Errorf("%s after the refusal: nbdinfo --size %q", s.bin, got)
				}
			}
		})
	}
}

// waitNegotiationLine returns the reason of qemu-nbd's first "option negotiation failed"
// line printed after the first from bytes of its output, waiting for it when the case
// prints one (want), or checking that there is none.
func waitNegotiationLine(t *testing.T, s *server, from int, want bool) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, l := range strings.Split(s.Output()[from:], "\n") {
			if _, reason, ok := strings.Cut(l, negotiationFailed); ok {
				if !want {
					t.Fatalf("qemu-nbd printed %q, the catalogue says it prints nothing", l)
				}
				return reason
			}
		}
		if !want {
			return ""
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd printed no %q line:\n%s", negotiationFailed, s.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitMetric waits until series reaches at least min.
func waitMetric(t *testing.T, s *server, series string, min float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for metric(t, s, series) < min {
		if time.Now().After(deadline) {
			t.Fatalf("%s stayed below %v\n%s", series, min, s.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The replies to every option before STARTTLS, and to STARTTLS on a server without TLS, are
// qemu-nbd's byte for byte.
func TestTLSRequiredRepliesMatchQemuNBD(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	img := newRaw(t, shortTempDir(t), 1<<20)
	var script []byte
	for _, o := range []struct {
		opt     nbd.Opt
		payload []byte
	}{
		{nbd.OptList, nil}, {nbd.OptInfo, infoPayload("")}, {nbd.OptGo, infoPayload("")},
		{nbd.OptStructuredReply, nil}, {nbd.OptListMetaContext, metaPayload("", nbd.MetaBaseAllocation)},
		{nbd.OptSetMetaContext, metaPayload("", nbd.MetaBaseAllocation)}, {nbd.OptExtendedHeaders, nil},
		{99, []byte("xyz")}, {nbd.OptStartTLS, []byte{0}}, // the last one closes
	} {
		script = append(append(script, optHeader(o.opt, uint32(len(o.payload)))...), o.payload...)
	}
	plain := append(append(optHeader(nbd.OptStartTLS, 0), optHeader(nbd.OptStartTLS, 1)...), 0)
	plain = append(append(plain, optHeader(nbd.OptList, 0)...), optHeader(nbd.OptAbort, 0)...)

	replies := func(s *server, b []byte) []byte {
		c := dialRaw(t, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)))
		c.sendFlags(nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes)
		c.write(b)
		return c.expectClosed()
	}
	for _, tc := range []struct {
		name   string
		args   []string
		script []byte
	}{
		{"TLS required", append(tlsArgs(p.server, false), "-f", "raw", img), script},
		{"no TLS", []string{"-f", "raw", img}, plain},
	} {
		want := replies(startQemuNBD(t, serverConfig{Args: tc.args, TCP: true}), tc.script)
		got := replies(startQnbd(t, serverConfig{Args: tc.args, TCP: true}), tc.script)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: qnbd sent\n%q\nqemu-nbd sent\n%q", tc.name, got, want)
		}
	}
}
