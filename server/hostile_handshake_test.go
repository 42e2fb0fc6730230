// The hostile-client catalog (docs/hostile-clients.md), handshake items 1-16: each test asserts
// the spec's answer or a hard disconnect, that the server keeps serving another client, and
// (via startServer) that no goroutine outlives the test.
package server

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// hostileServer is a default server plus a check, at cleanup, that it still serves.
func hostileServer(t *testing.T, cfg Config) *testServer {
	ts := startServer(t, cfg)
	t.Cleanup(func() {
		if !t.Failed() {
			ts.stillServes()
		}
	})
	return ts
}

// 1. Wrong or missing client flags.
func TestHostile01ClientFlags(t *testing.T) {
	ts := hostileServer(t, Config{})
	for _, f := range []ClientFlags{1 << 2, 1 << 31, 0xffffffff, FlagCFixedNewstyle | 1<<5} {
		c := ts.dial()
		c.sendFlags(f)
		c.expectClosed()
	}
	// Missing: two bytes, then EOF.
	c := ts.dial()
	c.write([]byte{0, 0})
	c.nc.(*net.TCPConn).CloseWrite()
	c.expectClosed()
}

// 2. Wrong option magic.
func TestHostile02OptionMagic(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.write(writeBuf(nil).u64(MagicIHaveOpt ^ 1).u32(uint32(OptList)).u32(0))
	c.expectClosed()
}

// 3. Option length 0, 2^32-1, and above the limit (CVE-2017-15119).
func TestHostile03OptionLength(t *testing.T) {
	// A handshake limit longer than expectClosed's wait: a connection closed before that wait
	// ends was closed by the length check, not by the limit. No timing window.
	ts := hostileServer(t, Config{HandshakeLimit: time.Minute})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptGo, nil), RepErrInvalid) // zero length: too short for GO
	c.wantRep(c.opt(OptSetMetaContext, nil), RepErrInvalid)
	c.wantRep(c.opt(99, make([]byte, DefaultMaxOptionLen)), RepErrUnsup) // at the limit: skipped
	for _, n := range []uint32{DefaultMaxOptionLen + 1, 0xffffffff} {
		c := ts.dial()
		c.sendFlags(FlagCFixedNewstyle)
		c.write(writeBuf(nil).u64(MagicIHaveOpt).u32(99).u32(n))
		c.expectClosed()
	}
	// EXPORT_NAME longer than a string.
	c = ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.write(writeBuf(nil).u64(MagicIHaveOpt).u32(uint32(OptExportName)).u32(MaxStringLen + 1))
	c.expectClosed()
}

// 4. Payload shorter than the length declared.
func TestHostile04ShortPayload(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.write(append(writeBuf(nil).u64(MagicIHaveOpt).u32(uint32(OptGo)).u32(100), infoPayload("")...))
	c.nc.(*net.TCPConn).CloseWrite()
	c.expectClosed()
}

// 5. An unknown option number.
func TestHostile05UnknownOption(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(0xdeadbeef, []byte("payload")), RepErrUnsup)
	c.wantRep(c.opt(OptGo, infoPayload("")), RepAck)
}

// 6. More than N options without GO.
func TestHostile06TooManyOptions(t *testing.T) {
	ts := hostileServer(t, Config{MaxOptions: 8})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	for range 8 {
		c.wantRep(c.opt(OptInfo, infoPayload("")), RepAck)
	}
	c.sendOpt(OptGo, infoPayload(""))
	c.expectClosed()
	// GO as the last allowed option works.
	c = ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	for range 7 {
		c.wantRep(c.opt(OptList, nil), RepAck)
	}
	c.wantRep(c.opt(OptGo, infoPayload("")), RepAck)
}

// 7. The same option repeated; SET_META_CONTEXT after a failed GO.
func TestHostile07RepeatedOptions(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
	c.wantRep(c.opt(OptStructuredReply, nil), RepErrInvalid)
	c.mode = modeStructured
	c.wantRep(c.opt(OptSetMetaContext, metaPayload("", MetaBaseAllocation)), RepAck)
	c.wantRep(c.opt(OptGo, infoPayload("missing")), RepErrUnknown)
	rs := c.opt(OptSetMetaContext, metaPayload("", MetaBaseAllocation))
	c.wantRep(rs, RepAck)
	c.wantRep(c.opt(OptGo, infoPayload("")), RepAck)
	r := c.do(Request{Type: CmdBlockStatus, Length: 4096}, nil)
	c.wantErrno(r, 0)
	c.disc()
}

// 8. Export names of length 0, 256, 4096, 4097 and 0xffffffff (CVE-2017-15118,
// CVE-2022-26495/26496).
func TestHostile08NameLengths(t *testing.T) {
	long := strings.Repeat("n", MaxStringLen)
	ts := hostileServer(t, Config{Exports: []*Export{
		{Name: "", Backend: newMem(4096)},
		{Name: long, Backend: newMem(8192)},
	}})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptInfo, infoPayload("")), RepAck)
	c.wantRep(c.opt(OptInfo, infoPayload(strings.Repeat("x", 256))), RepErrUnknown)
	rs := c.opt(OptInfo, infoPayload(long, InfoName))
	c.wantRep(rs, RepAck)
	if string(parseInfos(rs)[InfoName]) != long {
		t.Errorf("4096-byte name not echoed")
	}
	rs = c.opt(OptInfo, infoPayload(long+"x"))
	c.wantRep(rs, RepErrInvalid)
	if len(rs[0].data) > MaxStringLen {
		t.Errorf("error string of %d bytes (CVE-2020-10761)", len(rs[0].data))
	}
	// A name length of 0xffffffff in a short option.
	c.wantRep(c.opt(OptGo, writeBuf(nil).u32(0xffffffff).u16(0)), RepErrInvalid)
	c.wantRep(c.opt(OptListMetaContext, writeBuf(nil).u32(0xffffffff).u32(0)), RepErrInvalid)
	c.wantRep(c.opt(OptGo, infoPayload(long)), RepAck)
	c.mode = modeSimple
	c.wantErrno(c.read(0, 8192, 0), 0)
	c.disc()
	// EXPORT_NAME: a 4096-byte name works; 4097 is a hard disconnect.
	c = ts.connect(clientOpts{export: long, exportName: true})
	if c.size != 8192 {
		t.Errorf("size %d", c.size)
	}
	c.disc()
	c = ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.sendOpt(OptExportName, []byte(long+"x"))
	c.expectClosed()
}

// 9. A name with an embedded NUL or invalid UTF-8.
func TestHostile09BadNames(t *testing.T) {
	ts := hostileServer(t, Config{})
	for _, name := range []string{"a\x00b", "\x00", "\xff\xfe", "ok\xc3"} {
		c := ts.dial()
		c.sendFlags(FlagCFixedNewstyle)
		c.wantRep(c.opt(OptGo, infoPayload(name)), RepErrInvalid)
		c.wantRep(c.opt(OptInfo, infoPayload(name)), RepErrInvalid)
		c.sendOpt(OptExportName, []byte(name))
		c.expectClosed()
	}
}

// 10. An export that does not exist.
func TestHostile10UnknownExport(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptGo, infoPayload("nope")), RepErrUnknown)
	c.wantRep(c.opt(OptInfo, infoPayload("nope")), RepErrUnknown)
	c.wantRep(c.opt(OptListMetaContext, metaPayload("nope")), RepErrUnknown)
	c.sendOpt(OptExportName, []byte("nope"))
	c.expectClosed()
}

// 11. INFO/GO with an information-request count that disagrees with the length.
func TestHostile11InfoCount(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	p := writeBuf(nil).u32(0).u16(5).u16(uint16(InfoName)).u16(uint16(InfoBlockSize))
	c.wantRep(c.opt(OptGo, p), RepErrInvalid)
	p = writeBuf(nil).u32(0).u16(1).u16(uint16(InfoName)).u16(uint16(InfoBlockSize))
	c.wantRep(c.opt(OptInfo, p), RepErrInvalid)
	p = writeBuf(nil).u32(0).u16(0xffff)
	c.wantRep(c.opt(OptInfo, p), RepErrInvalid)
	c.wantRep(c.opt(OptGo, infoPayload("")), RepAck)
}

// 12. LIST with a payload.
func TestHostile12ListPayload(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptList, make([]byte, 1000)), RepErrInvalid)
	c.wantRep(c.opt(OptList, nil), RepAck)
}

// 13. STARTTLS without TLS configured, twice, and with plaintext options pipelined ahead of
// it (CVE-2021-3716: nothing negotiated before a successful STARTTLS may survive; here
// STARTTLS never succeeds, and negotiation.reset is the seam).
func TestHostile13StartTLS(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	// Pipelined: STRUCTURED_REPLY and STARTTLS in one write, before any reply is read.
	b := writeBuf(nil).u64(MagicIHaveOpt).u32(uint32(OptStructuredReply)).u32(0).
		u64(MagicIHaveOpt).u32(uint32(OptStartTLS)).u32(0)
	c.write(b)
	if r := c.readOpt(); r.rep != RepAck {
		t.Fatalf("STRUCTURED_REPLY: %v", r.rep)
	}
	if r := c.readOpt(); r.rep != RepErrPolicy {
		t.Fatalf("STARTTLS: %v", r.rep)
	}
	c.wantRep(c.opt(OptStartTLS, nil), RepErrPolicy)
	c.wantRep(c.opt(OptGo, infoPayload("")), RepAck)
}

// 14. ABORT in the middle of negotiation, with and without waiting for the reply.
func TestHostile14Abort(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
	c.wantRep(c.opt(OptSetMetaContext, metaPayload("", MetaBaseAllocation)), RepAck)
	c.wantRep(c.opt(OptAbort, nil), RepAck)
	c.expectClosed()
	c = ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.sendOpt(OptAbort, nil)
	c.nc.Close()
	ts.waitConns(0)
}

// 15. EOF at every byte of a handshake, and the slowloris pattern.
func TestHostile15EOFEveryByteAndSlowloris(t *testing.T) {
	ts := hostileServer(t, Config{HandshakeLimit: 300 * time.Millisecond})
	script := writeBuf(nil).u32(uint32(FlagCFixedNewstyle | FlagCNoZeroes))
	for _, o := range []struct {
		opt Opt
		p   []byte
	}{
		{OptStructuredReply, nil},
		{OptListMetaContext, metaPayload("")},
		{OptSetMetaContext, metaPayload("", MetaBaseAllocation)},
		{OptInfo, infoPayload("", InfoName)},
		{OptGo, infoPayload("", InfoBlockSize)},
	} {
		script = append(script.u64(MagicIHaveOpt).u32(uint32(o.opt)).u32(uint32(len(o.p))), o.p...)
	}
	for cut := 0; cut < len(script); cut++ {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		nc.Write(script[:cut])
		nc.(*net.TCPConn).CloseWrite()
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		nc.Close()
	}
	ts.waitConns(0)

	// Slowloris: one byte every 100 ms would take seconds to finish; the handshake limit
	// ends it. What proves it is the limit is that the client is cut off mid-script, not a
	// timing window (a loaded machine can stretch any window); the clock is read before the
	// dial, so the server's limit cannot have started earlier.
	start := time.Now()
	c := ts.dial()
	sent := make(chan int, 1)
	go func() {
		n := 0
		defer func() { sent <- n }()
		for _, b := range script {
			if _, err := c.nc.Write([]byte{b}); err != nil {
				return
			}
			n++
			time.Sleep(100 * time.Millisecond)
		}
	}()
	c.expectClosed()
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("slowloris connection closed after %v, before the 300ms limit", d)
	}
	if n := <-sent; n == len(script) {
		t.Errorf("the slow client sent its whole %d-byte handshake: the limit did not cut it off", n)
	}
}

// 16. Connection flood beyond max-connections.
func TestHostile16ConnectionFlood(t *testing.T) {
	ts := hostileServer(t, Config{MaxConns: 2})
	a, b := ts.dial(), ts.dial()
	// The third waits in the backlog: no greeting.
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, err := nc.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("third connection greeted beyond the limit")
	}
	for range 20 { // a flood queues up too
		if f, err := net.Dial("tcp", ts.addr); err == nil {
			defer f.Close()
		}
	}
	a.nc.Close()
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	c := newClient(t, nc)
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptAbort, nil), RepAck)
	b.nc.Close()
}

// Variant of 15 and 16: a crowd idling in the handshake is dropped at the limit, and a
// client arriving afterwards is served at once.
func TestHostileIdleCrowd(t *testing.T) {
	const n = 200
	ts := hostileServer(t, Config{HandshakeLimit: 500 * time.Millisecond})
	var conns []net.Conn
	for range n {
		nc, err := net.Dial("tcp", ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		conns = append(conns, nc)
	}
	// Nothing but the handshake limit closes an idle connection, so all of them going is
	// the proof; waitConns bounds the wait (no timing window: a loaded machine stretches it).
	ts.waitConns(0)
	for _, nc := range conns {
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, nc); err != nil {
			t.Fatalf("connection not closed: %v", err)
		}
	}
}
