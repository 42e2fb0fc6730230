// Byte-level comparison with qemu-nbd: send one request, valid or not, to a server and take
// back its whole reply as raw bytes plus whether the connection survived, so that a test can
// require qnbd's bytes to equal qemu-nbd's.
package e2e

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	nbd "github.com/qnbd/qnbd/server"
)

// wireOutcome is everything a client can observe about one request: the reply bytes and
// whether the server kept the connection.
type wireOutcome struct {
	reply  []byte
	closed bool
}

func (o wireOutcome) String() string {
	s := hex.EncodeToString(o.reply)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if msg := replyMessage(o.reply); msg != "" {
		s += fmt.Sprintf(" %q", msg)
	}
	if o.closed {
		s += " +closed"
	}
	return s
}

// replyMessage is the message of a structured error chunk, "" for anything else.
func replyMessage(b []byte) string {
	if len(b) < 26 || wbe.Uint32(b) != nbd.MagicStructuredReply || wbe.Uint16(b[6:])&0x8000 == 0 {
		return ""
	}
	n := int(wbe.Uint16(b[24:]))
	if 26+n > len(b) {
		return ""
	}
	return string(b[26 : 26+n])
}

// exchange sends r (with payload) on a negotiated connection and reads its whole reply as raw
// bytes: a simple reply (with READ data when it succeeded) or structured chunks up to DONE.
// It then checks that the connection still answers a one-byte READ; a server that closed
// the connection at any point gives closed. Nothing here fails the test on a bad reply.
func (c *rawConn) exchange(r nbd.Request, payload []byte) wireOutcome {
	c.t.Helper()
	var o wireOutcome
	hdr := nbd.AppendRequest(nil, r, false)
	if _, err := c.nc.Write(append(hdr, payload...)); err != nil {
		o.closed = true
		return o
	}
	reply, err := c.rawReply(r)
	o.reply = reply
	if err != nil {
		o.closed = true
		return o
	}
	probe := nbd.Request{Type: nbd.CmdRead, Cookie: r.Cookie + 1000, Length: 1}
	if _, err := c.nc.Write(nbd.AppendRequest(nil, probe, false)); err != nil {
		o.closed = true
		return o
	}
	if _, err := c.rawReply(probe); err != nil {
		o.closed = true
	}
	return o
}

// rawReply reads one reply to r as bytes; err is set when the connection ended first.
func (c *rawConn) rawReply(r nbd.Request) ([]byte, error) {
	c.nc.SetReadDeadline(time.Now().Add(wireTimeout))
	var out []byte
	take := func(n uint64) ([]byte, error) {
		p := make([]byte, n)
		_, err := io.ReadFull(c.br, p)
		out = append(out, p...)
		return p, err
	}
	for {
		m, err := take(4)
		if err != nil {
			return out, noTimeout(c.t, err)
		}
		switch wbe.Uint32(m) {
		case nbd.MagicSimpleReply:
			h, err := take(12)
			if err != nil {
				return out, noTimeout(c.t, err)
			}
			if wbe.Uint32(h) == 0 && r.Type == nbd.CmdRead {
				_, err = take(r.Length)
			}
			return out, noTimeout(c.t, err)
		case nbd.MagicStructuredReply:
			h, err := take(16)
			if err != nil {
				return out, noTimeout(c.t, err)
			}
			if _, err := take(uint64(wbe.Uint32(h[12:]))); err != nil {
				return out, noTimeout(c.t, err)
			}
			if nbd.ReplyFlags(wbe.Uint16(h))&nbd.ReplyFlagDone != 0 {
				return out, nil
			}
		default:
			c.t.Fatalf("reply magic %x", m)
		}
	}
}

// noTimeout passes through the end of a connection and fails the test on a timeout: a
// server that neither answers nor closes is a bug in either server or in the test.
func noTimeout(t *testing.T, err error) error {
	t.Helper()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("no reply within %v", wireTimeout)
	}
	return err
}

// sameOutcome reports a difference between qnbd's and qemu-nbd's outcomes of one request.
func sameOutcome(t *testing.T, what string, got, want wireOutcome) {
	t.Helper()
	if string(got.reply) != string(want.reply) || got.closed != want.closed {
		t.Errorf("%s: qnbd and qemu-nbd differ\nqnbd:     %v\nqemu-nbd: %v", what, got, want)
	}
}

// modeName names a wire mode in subtest names.
func modeName(m wireMode) string {
	return [...]string{"simple", "structured", "extended"}[m]
}
