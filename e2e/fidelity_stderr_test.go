// What the server prints on stderr, compared with qemu-nbd's, line for line: nothing for a
// clean session, "option negotiation failed: ..." for each way a handshake fails and
// "Disconnect client, due to: ..." for each way a connection in transmission fails, with and
// without -v (qemu-iotests compare this output; docs/qemu-nbd-fidelity.md).
package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	nbd "github.com/qnbd/qnbd/server"
)

// stderrScenario is one client behaviour; it leaves the connection closed or closing.
type stderrScenario struct {
	name string
	run  func(c *rawConn)
}

var stderrScenarios = []stderrScenario{
	{"close-after-greeting", func(c *rawConn) { c.close() }},
	{"unknown-client-flags", func(c *rawConn) { c.sendFlags(0x80); c.expectClosed() }},
	{"close-before-option", func(c *rawConn) { c.sendFlags(nbd.FlagCFixedNewstyle); c.close() }},
	{"close-in-option-header", func(c *rawConn) {
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.write(optHeader(nbd.OptGo, 0)[:12])
		c.close()
	}},
	{"close-in-option-payload", func(c *rawConn) {
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.write(append(optHeader(nbd.OptGo, 20), 0, 0))
		c.close()
	}},
	{"bad-option-magic", func(c *rawConn) {
		c.sendFlags(nbd.FlagCFixedNewstyle)
		h := optHeader(nbd.OptGo, 0)
		h[0] ^= 0xff
		c.write(h)
		c.expectClosed()
	}},
	{"abort", func(c *rawConn) {
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.opt(nbd.OptAbort, nil)
		c.close()
	}},
	{"unknown-export-then-abort", func(c *rawConn) {
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(nbd.OptGo, infoPayload("nosuch")), nbd.RepErrUnknown)
		c.opt(nbd.OptAbort, nil)
		c.close()
	}},
	{"unknown-export-then-close", func(c *rawConn) {
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(nbd.OptGo, infoPayload("nosuch")), nbd.RepErrUnknown)
		c.close()
	}},
	{"unknown-export-name", func(c *rawConn) {
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.sendOpt(nbd.OptExportName, []byte("nosuch"))
		c.expectClosed()
	}},
	{"unsupported-option", func(c *rawConn) {
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(99, nil), nbd.RepErrUnsup)
		c.opt(nbd.OptAbort, nil)
		c.close()
	}},
	{"clean-session", func(c *rawConn) {
		c.negotiate(wireStructured, "")
		c.read(0, 4096, 0)
		c.disc()
	}},
	{"close-in-transmission", func(c *rawConn) { c.negotiate(wireSimple, ""); c.close() }},
	{"bad-request-magic", func(c *rawConn) {
		c.negotiate(wireSimple, "")
		h := nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdRead, Cookie: 1, Length: 512}, false)
		h[0] ^= 0xff
		c.write(h)
		c.expectClosed()
	}},
	{"oversize-write", func(c *rawConn) {
		c.negotiate(wireStructured, "")
		c.write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdWrite, Cookie: 1, Length: 64 << 20}, false))
		c.expectClosed()
	}},
	{"close-in-request-header", func(c *rawConn) {
		c.negotiate(wireSimple, "")
		c.write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdRead, Length: 512}, false)[:10])
		c.close()
	}},
	{"close-in-write-payload", func(c *rawConn) {
		c.negotiate(wireSimple, "")
		c.write(append(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdWrite, Length: 4096}, false), make([]byte, 100)...))
		c.close()
	}},
}

// TestStderrMatchesQemuNBD runs every scenario against qnbd and qemu-nbd, each started with
// and without -v on a copy of the same image, and requires the same stderr once both have
// stopped, program names aside. After each scenario a clean session (GO, then DISC) must
// complete: with -e 1 the server takes it only once the scenario's connection is gone, so its
// message is out by then.
func TestStderrMatchesQemuNBD(t *testing.T) {
	for _, verbose := range []bool{false, true} {
		name := "quiet"
		if verbose {
			name = "verbose"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := newRaw(t, dir, 1<<20)
			out := map[string]string{}
			for _, bin := range []string{"qnbd", "qemu-nbd"} {
				args := []string{"-f", "raw", img}
				if verbose {
					args = append([]string{"-v"}, args...)
				}
				var s *server
				if bin == "qnbd" {
					s = startQnbd(t, serverConfig{Args: args})
				} else {
					s = startQemuNBD(t, serverConfig{Args: args})
				}
				// The readiness probe ends with a clean ABORT, which neither server reports;
				// compare from after a clean session, in our copy of the server's stderr.
				syncSession(t, s)
				from := len(s.Output())
				for _, sc := range stderrScenarios {
					sc.run(dialRaw(t, "unix", s.Sock))
					syncSession(t, s)
				}
				s.Stop()
				out[bin] = strings.ReplaceAll("\n"+s.Output()[from:], "\nqnbd: ", "\nqemu-nbd: ")
			}
			if out["qnbd"] != out["qemu-nbd"] {
				t.Errorf("stderr differs\nqnbd:%s\nqemu-nbd:%s", out["qnbd"], out["qemu-nbd"])
			}
			if n := strings.Count(out["qemu-nbd"], "\n"); n < 10 {
				t.Errorf("qemu-nbd printed %d lines, expected one per failing scenario:%s", n, out["qemu-nbd"])
			}
		})
	}
}

// syncSession runs a clean session (GO, then DISC) on s: with -e 1 the server takes it only
// once every earlier connection is gone, and with it what that connection printed.
func syncSession(t *testing.T, s *server) {
	t.Helper()
	c := dialRaw(t, "unix", s.Sock)
	c.negotiate(wireSimple, "")
	c.disc()
}

// TestLogFlagsChooseQnbdLog checks --log-level and --log-format: qnbd's own log appears only
// when asked for, as JSON lines with --log-format=json, while qemu-nbd's lines stay as they
// are.
func TestLogFlagsChooseQnbdLog(t *testing.T) {
	t.Parallel()
	img := newRaw(t, t.TempDir(), 1<<20)
	s := startQnbd(t, serverConfig{Args: []string{"--log-level=debug", "--log-format=json", "-f", "raw", img}})
	c := dialRaw(t, "unix", s.Sock)
	c.negotiate(wireSimple, "")
	c.disc()
	c = dialRaw(t, "unix", s.Sock)
	c.sendFlags(0x80)
	c.expectClosed()
	syncSession(t, s)
	s.Stop()
	var entered, qemuLine bool
	for _, l := range lines(s.Output()) {
		if strings.HasPrefix(l, "qnbd: ") {
			qemuLine = qemuLine || l == "qnbd: option negotiation failed: Unknown client flags 0x80 received"
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil {
			t.Errorf("not a JSON log line: %q", l)
			continue
		}
		entered = entered || rec["msg"] == "nbd: client entered transmission"
	}
	if !entered || !qemuLine {
		t.Errorf("debug JSON log (%v) or qemu-nbd's line (%v) missing:\n%s", entered, qemuLine, s.Output())
	}
}
