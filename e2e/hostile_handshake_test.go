// Hostile-client catalog items 1-16 (handshake and option phase, docs/hostile-clients.md)
// against the built qnbd: each asserts the spec's option reply or a hard disconnect.
package e2e

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	nbd "github.com/qnbd/qnbd/server"
)

// wantClosedSilently requires a hard disconnect with nothing sent after the last reply.
func wantClosedSilently(t *testing.T, c *rawConn, what string) {
	t.Helper()
	if b := c.expectClosed(); len(b) > 0 {
		t.Fatalf("%s: server sent %d bytes (%x) instead of disconnecting", what, len(b), b[:min(len(b), 32)])
	}
}

// wantErrMsgBounded requires every error reply in rs to carry a message of at most
// MaxStringLen bytes (the rule CVE-2020-10761 broke).
func wantErrMsgBounded(t *testing.T, rs []optReply) {
	t.Helper()
	for _, r := range rs {
		if r.rep.IsError() && len(r.data) > nbd.MaxStringLen {
			t.Errorf("%v: error message of %d bytes (max %d)", r.opt, len(r.data), nbd.MaxStringLen)
		}
	}
}

func hostileHandshakeItems(t *testing.T, a, b *hostileTarget) {
	item(t, "01-client-flags", func(t *testing.T) {
		for _, tg := range []*hostileTarget{a, b} {
			for _, f := range []nbd.ClientFlags{1 << 2, 1 << 31, 0xffffffff, nbd.FlagCFixedNewstyle | 1<<5} {
				c := tg.dial(t)
				c.sendFlags(f)
				wantClosedSilently(t, c, "unknown client flags")
			}
			// Missing: two of the four bytes, then EOF.
			c := tg.dial(t)
			c.write([]byte{0, 0})
			c.closeWrite()
			wantClosedSilently(t, c, "truncated client flags")
		}
		// No flags at all is legal (an old client): EXPORT_NAME answers with the 124 zero bytes.
		c := a.dial(t)
		c.sendFlags(0)
		c.sendOpt(nbd.OptExportName, nil)
		var ex [134]byte
		c.readFull(ex[:])
		if wbe.Uint64(ex[:]) != hostileSize || !bytes.Equal(ex[10:], make([]byte, 124)) {
			t.Fatalf("EXPORT_NAME reply %x", ex)
		}
		a.wantModel(t, c, 0, 64<<10)
		c.disc()
	}, a, b)

	item(t, "02-option-magic", func(t *testing.T) {
		for _, magic := range []uint64{nbd.MagicIHaveOpt ^ 1, nbd.MagicNBD, 0} {
			c := a.dial(t)
			c.sendFlags(nbd.FlagCFixedNewstyle)
			h := optHeader(nbd.OptList, 0)
			wbe.PutUint64(h, magic)
			c.write(h)
			wantClosedSilently(t, c, "bad option magic")
		}
	}, a)

	item(t, "03-option-length", func(t *testing.T) {
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(nbd.OptGo, nil), nbd.RepErrInvalid) // too short for GO
		c.wantRep(c.opt(nbd.OptInfo, []byte{0, 0, 0}), nbd.RepErrInvalid)
		c.wantRep(c.opt(nbd.OptSetMetaContext, nil), nbd.RepErrInvalid)
		c.wantRep(c.opt(nbd.OptListMetaContext, nil), nbd.RepErrInvalid)
		// At the limit: skipped and refused, negotiation goes on.
		c.wantRep(c.opt(99, make([]byte, nbd.DefaultMaxOptionLen)), nbd.RepErrUnsup)
		c.enter("")
		a.wantModel(t, c, 0, 4096)
		c.disc()
		// Over the limit, 2^32-1, and an INFO/GO longer than its content can be: a hard
		// disconnect without reading the payload (none is sent).
		maxInfo := uint32(4 + nbd.MaxStringLen + 2 + 2*0xffff)
		for _, h := range [][]byte{
			optHeader(99, nbd.DefaultMaxOptionLen+1), optHeader(99, 0xffffffff),
			optHeader(nbd.OptList, 0xffffffff), optHeader(nbd.OptGo, maxInfo+1),
			optHeader(nbd.OptExportName, nbd.MaxStringLen+1),
		} {
			c := a.dial(t)
			c.sendFlags(nbd.FlagCFixedNewstyle)
			c.write(h)
			// Closed before wireTimeout, which is shorter than A's handshake limit: closed
			// by the length check, not by the limit.
			wantClosedSilently(t, c, "oversize option")
		}
	}, a)

	item(t, "04-short-payload", func(t *testing.T) {
		for _, tg := range []*hostileTarget{a, b} {
			c := tg.dial(t)
			c.sendFlags(nbd.FlagCFixedNewstyle)
			c.write(append(optHeader(nbd.OptGo, 100), infoPayload("")...))
			c.closeWrite()
			wantClosedSilently(t, c, "GO payload cut by EOF")
		}
		// Without the EOF the server waits for the rest until the handshake limit (B: 2 s).
		// The clock starts before the dial, so the server's limit cannot have started
		// earlier; no upper bound (a loaded machine stretches it; wireTimeout bounds a hang).
		start := time.Now()
		c := b.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.write(append(optHeader(nbd.OptGo, 100), infoPayload("")...))
		wantClosedSilently(t, c, "GO payload never completed")
		if d := time.Since(start); d < 2*time.Second {
			t.Errorf("incomplete option dropped after %v, before the 2s handshake limit", d)
		}
	}, a, b)

	item(t, "05-unknown-option", func(t *testing.T) {
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(0xdeadbeef, []byte("payload")), nbd.RepErrUnsup)
		c.wantRep(c.opt(nbd.OptPeekExport, nil), nbd.RepErrUnsup) // withdrawn
		c.wantRep(c.opt(0, nil), nbd.RepErrUnsup)
		c.enter("")
		a.wantModel(t, c, 8<<20, 128<<10)
		c.disc()
	}, a)

	item(t, "06-too-many-options", func(t *testing.T) {
		const limit = nbd.DefaultMaxOptions
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		for range limit {
			c.wantRep(c.opt(nbd.OptInfo, infoPayload("")), nbd.RepAck)
		}
		c.sendOpt(nbd.OptGo, infoPayload(""))
		wantClosedSilently(t, c, "option over the limit")
		// GO as the last allowed option still works.
		c = a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		for range limit - 1 {
			c.wantRep(c.opt(nbd.OptList, nil), nbd.RepAck)
		}
		c.enter("")
		a.wantModel(t, c, 0, 4096)
		c.disc()
	}, a)

	item(t, "07-repeated-options", func(t *testing.T) {
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(nbd.OptStructuredReply, nil), nbd.RepAck)
		c.wantRep(c.opt(nbd.OptStructuredReply, nil), nbd.RepErrInvalid)
		c.mode = wireStructured
		c.wantRep(c.opt(nbd.OptSetMetaContext, metaPayload("", nbd.MetaBaseAllocation)), nbd.RepAck)
		c.wantRep(c.opt(nbd.OptGo, infoPayload("missing")), nbd.RepErrUnknown)
		// SET_META_CONTEXT again after the failed GO, then GO.
		rs := c.opt(nbd.OptSetMetaContext, metaPayload("", nbd.MetaBaseAllocation))
		c.wantRep(rs, nbd.RepAck)
		if len(rs) != 2 || rs[0].rep != nbd.RepMetaContext {
			t.Fatalf("SET_META_CONTEXT replies %v", rs)
		}
		c.enter("")
		// The context works: [2 MiB, +64 KiB) is a hole, [0, 64 KiB) data.
		r := c.cmd(nbd.CmdBlockStatus, 2<<20, 64<<10, nbd.CmdFlagReqOne)
		c.wantErrno(r, 0)
		if got := firstStatus(t, r); got != nbd.StateHole|nbd.StateZero {
			t.Errorf("block status of a hole: flags %d", got)
		}
		r = c.cmd(nbd.CmdBlockStatus, 0, 64<<10, nbd.CmdFlagReqOne)
		c.wantErrno(r, 0)
		if got := firstStatus(t, r); got != 0 {
			t.Errorf("block status of data: flags %d", got)
		}
		c.disc()

		// Extended headers twice; structured replies after them; EXPORT_NAME after them.
		c = a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(nbd.OptExtendedHeaders, nil), nbd.RepAck)
		c.wantRep(c.opt(nbd.OptExtendedHeaders, nil), nbd.RepErrInvalid)
		c.wantRep(c.opt(nbd.OptStructuredReply, nil), nbd.RepErrExtHeaderReqd)
		c.mode = wireExtended
		c.enter("")
		a.wantModel(t, c, 1<<20, 64<<10)
		c.disc()
		c = a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(nbd.OptExtendedHeaders, nil), nbd.RepAck)
		c.sendOpt(nbd.OptExportName, nil)
		wantClosedSilently(t, c, "EXPORT_NAME after EXTENDED_HEADERS")
	}, a)

	item(t, "08-name-lengths", func(t *testing.T) {
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		rs := c.opt(nbd.OptInfo, infoPayload("", nbd.InfoName))
		c.wantRep(rs, nbd.RepAck)
		if n, ok := infos(rs)[nbd.InfoName]; !ok || len(n) != 0 {
			t.Errorf("name of the default export %q", n)
		}
		for _, n := range []int{256, 257, 4096} {
			rs := c.opt(nbd.OptInfo, infoPayload(strings.Repeat("n", n)))
			c.wantRep(rs, nbd.RepErrUnknown)
			wantErrMsgBounded(t, rs)
		}
		rs = c.opt(nbd.OptGo, infoPayload(strings.Repeat("n", 4097)))
		c.wantRep(rs, nbd.RepErrInvalid)
		wantErrMsgBounded(t, rs)
		// A name length of 0xffffffff inside a short option.
		c.wantRep(c.opt(nbd.OptGo, wbe.AppendUint16(wbe.AppendUint32(nil, 0xffffffff), 0)), nbd.RepErrInvalid)
		c.wantRep(c.opt(nbd.OptListMetaContext, wbe.AppendUint32(wbe.AppendUint32(nil, 0xffffffff), 0)), nbd.RepErrInvalid)
		rs = c.opt(nbd.OptInfo, infoPayload("ro", nbd.InfoName))
		c.wantRep(rs, nbd.RepAck)
		if n := infos(rs)[nbd.InfoName]; string(n) != "ro" {
			t.Errorf("NBD_INFO_NAME %q", n)
		}
		c.enter("")
		a.wantModel(t, c, 3<<20-4096, 8192)
		c.disc()
		// EXPORT_NAME: 4096 bytes naming nothing and 4097 bytes are both a hard disconnect; ""
		// works (NO_ZEROES negotiated: no padding).
		for _, n := range []int{4096, 4097} {
			c := a.dial(t)
			c.sendFlags(nbd.FlagCFixedNewstyle)
			c.sendOpt(nbd.OptExportName, []byte(strings.Repeat("n", n)))
			wantClosedSilently(t, c, "EXPORT_NAME of an unknown or too long name")
		}
		c = a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes)
		c.sendOpt(nbd.OptExportName, nil)
		var ex [10]byte
		c.readFull(ex[:])
		if wbe.Uint64(ex[:]) != hostileSize {
			t.Fatalf("EXPORT_NAME size %d", wbe.Uint64(ex[:]))
		}
		a.wantModel(t, c, 0, 4096)
		c.disc()
	}, a)

	item(t, "09-bad-names", func(t *testing.T) {
		for _, name := range []string{"a\x00b", "\x00", "\xff\xfe", "ok\xc3", strings.Repeat("\xff", 4096)} {
			c := a.dial(t)
			c.sendFlags(nbd.FlagCFixedNewstyle)
			for _, o := range []nbd.Opt{nbd.OptGo, nbd.OptInfo} {
				rs := c.opt(o, infoPayload(name))
				c.wantRep(rs, nbd.RepErrInvalid)
				wantErrMsgBounded(t, rs)
			}
			c.sendOpt(nbd.OptExportName, []byte(name))
			wantClosedSilently(t, c, "EXPORT_NAME of an invalid name")
		}
	}, a)

	item(t, "10-unknown-export", func(t *testing.T) {
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(nbd.OptStructuredReply, nil), nbd.RepAck)
		c.wantRep(c.opt(nbd.OptGo, infoPayload("nope")), nbd.RepErrUnknown)
		c.wantRep(c.opt(nbd.OptInfo, infoPayload("nope")), nbd.RepErrUnknown)
		c.wantRep(c.opt(nbd.OptListMetaContext, metaPayload("nope")), nbd.RepErrUnknown)
		c.wantRep(c.opt(nbd.OptSetMetaContext, metaPayload("nope", nbd.MetaBaseAllocation)), nbd.RepErrUnknown)
		c.sendOpt(nbd.OptExportName, []byte("nope"))
		wantClosedSilently(t, c, "EXPORT_NAME of an unknown export")
	}, a)

	item(t, "11-info-count", func(t *testing.T) {
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		for _, p := range [][]byte{
			wbe.AppendUint16(wbe.AppendUint16(wbe.AppendUint16(wbe.AppendUint32(nil, 0), 5), uint16(nbd.InfoName)), uint16(nbd.InfoBlockSize)),
			wbe.AppendUint16(wbe.AppendUint16(wbe.AppendUint16(wbe.AppendUint32(nil, 0), 1), uint16(nbd.InfoName)), uint16(nbd.InfoBlockSize)),
			wbe.AppendUint16(wbe.AppendUint32(nil, 0), 0xffff),
			append(infoPayload(""), 0), // an odd trailing byte
		} {
			c.wantRep(c.opt(nbd.OptGo, p), nbd.RepErrInvalid)
			c.wantRep(c.opt(nbd.OptInfo, p), nbd.RepErrInvalid)
		}
		// Unknown information requests are ignored.
		c.wantRep(c.opt(nbd.OptInfo, infoPayload("", 0x7777, 0xffff)), nbd.RepAck)
		c.enter("")
		a.wantModel(t, c, 0, 4096)
		c.disc()
	}, a)

	item(t, "12-list-payload", func(t *testing.T) {
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(nbd.OptList, make([]byte, 1000)), nbd.RepErrInvalid)
		rs := c.opt(nbd.OptList, nil)
		c.wantRep(rs, nbd.RepAck)
		var names []string
		for _, r := range rs[:len(rs)-1] {
			if r.rep != nbd.RepServer || len(r.data) < 4 || int(wbe.Uint32(r.data)) > len(r.data)-4 {
				t.Fatalf("LIST reply %v %x", r.rep, r.data)
			}
			names = append(names, string(r.data[4:4+wbe.Uint32(r.data)]))
		}
		if strings.Join(names, ",") != ",ro" {
			t.Errorf("LIST names %q, want \"\" and \"ro\"", names)
		}
		c.enter("")
		c.disc()
	}, a)

	item(t, "13-starttls", func(t *testing.T) {
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		// Pipelined in one write, before any reply is read: plaintext options, then STARTTLS.
		c.write(append(optHeader(nbd.OptStructuredReply, 0), optHeader(nbd.OptStartTLS, 0)...))
		c.wantRep(c.readOptReplies(nbd.OptStructuredReply), nbd.RepAck)
		c.wantRep(c.readOptReplies(nbd.OptStartTLS), nbd.RepErrPolicy)
		c.wantRep(c.opt(nbd.OptStartTLS, nil), nbd.RepErrPolicy) // twice
		c.wantRep(c.opt(nbd.OptStartTLS, []byte("x")), nbd.RepErrInvalid)
		// STARTTLS never succeeded, so the plaintext STRUCTURED_REPLY stands.
		c.mode = wireStructured
		c.enter("")
		a.wantModel(t, c, 5<<20, 64<<10)
		c.disc()
		a.wantTLSClientRefused(t)
	}, a)

	item(t, "14-abort", func(t *testing.T) {
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(nbd.OptStructuredReply, nil), nbd.RepAck)
		c.wantRep(c.opt(nbd.OptSetMetaContext, metaPayload("", nbd.MetaBaseAllocation)), nbd.RepAck)
		c.wantRep(c.opt(nbd.OptAbort, nil), nbd.RepAck)
		wantClosedSilently(t, c, "after ABORT")
		// ABORT with data (to be ignored), and ABORT as the very first option.
		for _, p := range [][]byte{[]byte("ignored"), nil} {
			c = a.dial(t)
			c.sendFlags(nbd.FlagCFixedNewstyle)
			c.wantRep(c.opt(nbd.OptAbort, p), nbd.RepAck)
			wantClosedSilently(t, c, "after ABORT")
		}
		// ABORT and a reset without waiting for the reply.
		c = a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.sendOpt(nbd.OptAbort, nil)
		c.reset()
	}, a)

	item(t, "15-eof-every-byte", func(t *testing.T) {
		script := wbe.AppendUint32(nil, uint32(nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes))
		for _, o := range []struct {
			opt nbd.Opt
			p   []byte
		}{
			{nbd.OptStructuredReply, nil},
			{nbd.OptListMetaContext, metaPayload("")},
			{nbd.OptSetMetaContext, metaPayload("", nbd.MetaBaseAllocation)},
			{nbd.OptInfo, infoPayload("", nbd.InfoName)},
			{nbd.OptGo, infoPayload("", nbd.InfoBlockSize)},
		} {
			script = append(append(script, optHeader(o.opt, uint32(len(o.p)))...), o.p...)
		}
		for _, tg := range []*hostileTarget{a, b} {
			for cut := 0; cut < len(script); cut++ {
				c := tg.dial(t)
				c.write(script[:cut])
				c.closeWrite()
				c.expectClosed()
				c.close()
			}
		}
		t.Logf("%d cuts on TCP and on a Unix socket", len(script))
	}, a, b)

	item(t, "15-slowloris", func(t *testing.T) {
		// B: one byte every 300 ms of a valid handshake would take about 15 s; the 2 s limit
		// ends it, and meanwhile B serves another client on its second slot. The proof that
		// the limit ended it is that the client is cut off mid-script; the clock is read
		// before the dial so the server's limit cannot have started earlier. No upper time
		// bound: a loaded machine stretches any window.
		start := time.Now()
		c := b.dial(t)
		script := append(wbe.AppendUint32(nil, uint32(nbd.FlagCFixedNewstyle)), optHeader(nbd.OptList, 0)...)
		script = append(script, append(optHeader(nbd.OptGo, 6), infoPayload("")...)...)
		sent := make(chan int, 1)
		go func() {
			n := 0
			defer func() { sent <- n }()
			for _, x := range script {
				if _, err := c.nc.Write([]byte{x}); err != nil {
					return
				}
				n++
				time.Sleep(300 * time.Millisecond)
			}
		}()
		b.stillServes(t)
		// Whatever came before the close must be the reply to LIST; then EOF.
		got := c.expectClosed()
		d := time.Since(start)
		n := <-sent
		if len(got) > 0 && (len(got) != 20 || wbe.Uint64(got) != nbd.MagicOptReply) {
			t.Errorf("slowloris got %x", got)
		}
		if d < 2*time.Second {
			t.Errorf("slowloris connection closed after %v, before the 2s handshake limit", d)
		}
		if n == len(script) {
			t.Errorf("the slow client sent its whole %d-byte handshake: the limit did not cut it off", n)
		}
	}, b)

	item(t, "16-connection-flood", func(t *testing.T) {
		// B allows two clients (-e 2): two hold their slot in transmission; the third is
		// accepted by the kernel but not served (no greeting) until a slot frees.
		x, y := b.session(t, wireStructured), b.session(t, wireSimple)
		third := dialQuiet(t, "unix", b.addr)
		third.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, err := third.br.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Fatalf("third client greeted beyond -e 2")
		}
		var flood []*rawConn
		for range 200 {
			flood = append(flood, dialQuiet(t, "unix", b.addr))
		}
		requireRSS(t, b.srv, "a flood of 200 queued connections")
		for _, f := range flood {
			f.close() // the flood leaves before a slot frees
		}
		b.wantModel(t, x, 0, 64<<10)
		x.disc()
		// The third client is served now.
		third.nc.SetReadDeadline(time.Now().Add(wireTimeout))
		var g [18]byte
		if _, err := io.ReadFull(third.br, g[:]); err != nil || wbe.Uint64(g[:]) != nbd.MagicNBD {
			t.Fatalf("third client not greeted after a slot freed: %v", err)
		}
		third.negotiate(wireSimple, "")
		b.wantModel(t, third, 1<<20-4096, 8192)
		third.disc()
		y.disc()
		// A flood at A, which has no limit: every client is greeted; all leave.
		flood = flood[:0]
		for range 200 {
			flood = append(flood, a.dial(t))
		}
		requireRSS(t, a.srv, "200 connections in the handshake")
		for _, f := range flood {
			f.close()
		}
	}, a, b)
}

// firstStatus is the flags of the first extent of the first block-status chunk in r.
func firstStatus(t *testing.T, r rawReply) uint32 {
	t.Helper()
	for _, ck := range r.chunks {
		switch {
		case ck.typ == nbd.ReplyTypeBlockStatus && len(ck.data) >= 12:
			return wbe.Uint32(ck.data[8:])
		case ck.typ == nbd.ReplyTypeBlockStatusExt && len(ck.data) >= 24:
			return uint32(wbe.Uint64(ck.data[16:]))
		}
	}
	t.Fatalf("no block-status chunk in %v", r)
	return 0
}
