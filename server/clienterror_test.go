package server

import (
	"sync"
	"testing"
	"time"
)

// clientErrs collects what Config.ClientErrors receives.
type clientErrs struct {
	mu   sync.Mutex
	msgs []string
}

func (c *clientErrs) add(e *ClientError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.msgs = append(c.msgs, e.Error())
}

// wait returns the messages once there are n, failing the test after 10 s.
func (c *clientErrs) wait(t *testing.T, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		c.mu.Lock()
		if len(c.msgs) >= n {
			m := append([]string(nil), c.msgs...)
			c.mu.Unlock()
			return m
		}
		c.mu.Unlock()
	}
	t.Fatalf("ClientErrors: fewer than %d messages: %q", n, c.msgs)
	return nil
}

// TestClientErrorsWordedAsQemuNBD checks the lines a failed handshake and a dropped
// connection report, in qemu-nbd's words, and that NBD_OPT_ABORT and a clean NBD_CMD_DISC
// report nothing.
func TestClientErrorsWordedAsQemuNBD(t *testing.T) {
	var got clientErrs
	ts := startServer(t, Config{Exports: []*Export{{Backend: newMem(testSize)}}, ClientErrors: got.add})

	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.opt(OptAbort, nil) // nothing
	c.nc.Close()

	c = ts.dial()
	c.sendFlags(0x80)
	c.expectClosed()

	c = ts.connect(clientOpts{})
	c.disc() // nothing

	c = ts.connect(clientOpts{})
	h := AppendRequest(nil, Request{Type: CmdRead, Cookie: 3, Length: 1}, false)
	h[0] ^= 0xff
	c.write(h)
	c.expectClosed()

	want := []string{
		"option negotiation failed: Unknown client flags 0x80 received",
		"Disconnect client, due to: Request handling failed in intermediate state",
	}
	msgs := got.wait(t, len(want))
	if len(msgs) != len(want) || msgs[0] != want[0] || msgs[1] != want[1] {
		t.Errorf("ClientErrors got %q, want %q", msgs, want)
	}
}
