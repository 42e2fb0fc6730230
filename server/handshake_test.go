// Handshake tests: every option, its replies and the negotiation state it leaves.
package server

import (
	"bytes"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func multiExportServer(t *testing.T) (*testServer, *memBackend, *memBackend) {
	a, b := newMem(testSize), newMem(2*testSize)
	ts := startServer(t, Config{Exports: []*Export{
		{Name: "", Backend: a, Description: "default disk", Trim: true},
		{Name: "ro", Backend: b, ReadOnly: true, MultiConn: true, Description: "read-only disk"},
		{Name: "plain", Backend: plainBackend{newMem(4096)}, Trim: true},
	}})
	return ts, a, b
}

func TestGreetingAndGo(t *testing.T) {
	ts, _, _ := multiExportServer(t)
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle | FlagCNoZeroes)
	rs := c.opt(OptGo, infoPayload("ro", InfoBlockSize, InfoName, InfoDescription, 999))
	c.wantRep(rs, RepAck)
	infos := parseInfos(rs)
	if got := string(infos[InfoName]); got != "ro" {
		t.Errorf("INFO_NAME %q", got)
	}
	if got := string(infos[InfoDescription]); got != "read-only disk" {
		t.Errorf("INFO_DESCRIPTION %q", got)
	}
	bs := readBuf(infos[InfoBlockSize])
	if len(bs) != 12 {
		t.Fatalf("INFO_BLOCK_SIZE payload %d bytes", len(bs))
	}
	if mn, pref, mx := bs.u32(), bs.u32(), bs.u32(); mn != 1 || pref != 4096 || mx != MaxPayload {
		t.Errorf("block sizes %d/%d/%d, want 1/4096/%d", mn, pref, mx, MaxPayload)
	}
	ex := infos[InfoExport]
	if len(ex) != 10 {
		t.Fatalf("INFO_EXPORT payload %d bytes", len(ex))
	}
	if size := be.Uint64(ex); size != 2*testSize {
		t.Errorf("size %d", size)
	}
	want := FlagHasFlags | FlagReadOnly | FlagSendFlush | FlagSendFUA | FlagSendCache | FlagCanMultiConn
	if f := TransmissionFlags(be.Uint16(ex[8:])); f != want {
		t.Errorf("flags %v, want %v", f, want)
	}
	// Transmission works: a simple read.
	c.mode = modeSimple
	c.wantErrno(c.read(0, 4096, 0), 0)
	c.disc()
}

func TestInfoThenMoreOptions(t *testing.T) {
	ts, _, _ := multiExportServer(t)
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	rs := c.opt(OptInfo, infoPayload(""))
	c.wantRep(rs, RepAck)
	infos := parseInfos(rs)
	if _, ok := infos[InfoName]; ok {
		t.Errorf("INFO_NAME sent without being requested")
	}
	if _, ok := infos[InfoBlockSize]; !ok {
		t.Errorf("INFO_BLOCK_SIZE must always be sent")
	}
	f := TransmissionFlags(be.Uint16(infos[InfoExport][8:]))
	want := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendCache | FlagSendTrim |
		FlagSendWriteZeroes | FlagSendFastZero
	if f != want {
		t.Errorf("flags %v, want %v", f, want)
	}
	// Still in option haggling.
	c.wantRep(c.opt(OptInfo, infoPayload("nope")), RepErrUnknown)
	c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
	rs = c.opt(OptGo, infoPayload("plain"))
	c.wantRep(rs, RepAck)
	f = TransmissionFlags(be.Uint16(parseInfos(rs)[InfoExport][8:]))
	// plain has no Trimmer, yet SEND_TRIM is advertised as qemu-nbd does (TRIM is then a
	// no-op); structured: SEND_DF.
	want = FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendCache | FlagSendWriteZeroes |
		FlagSendFastZero | FlagSendDF | FlagSendTrim
	if f != want {
		t.Errorf("flags %v, want %v", f, want)
	}
}

func TestExportName(t *testing.T) {
	for _, noZeroes := range []bool{false, true} {
		ts, _, _ := multiExportServer(t)
		flags := FlagCFixedNewstyle
		if noZeroes {
			flags |= FlagCNoZeroes
		}
		c := ts.connect(clientOpts{export: "ro", exportName: true, flags: flags})
		if c.size != 2*testSize || c.flags&FlagReadOnly == 0 || c.flags&FlagSendDF != 0 {
			t.Fatalf("size %d flags %v", c.size, c.flags)
		}
		c.wantErrno(c.read(4096, 4096, 0), 0)
		c.disc()
	}
}

func TestExportNameStructuredAdvertisesDF(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.connect(clientOpts{exportName: true, structured: true})
	if c.flags&FlagSendDF == 0 {
		t.Fatalf("flags %v lack SEND_DF with structured replies", c.flags)
	}
	r := c.read(0, 100, CmdFlagDF)
	c.wantErrno(r, 0)
	c.disc()
}

func TestNonFixedNewstyle(t *testing.T) {
	ts := startServer(t, Config{})
	// Without C_FIXED_NEWSTYLE only EXPORT_NAME works.
	c := ts.connect(clientOpts{exportName: true, flags: FlagCNoZeroes})
	c.wantErrno(c.read(0, 512, 0), 0)
	c.disc()

	// Other options are honoured anyway, as some clients (go-nbd) never set the bit.
	c = ts.dial()
	c.sendFlags(0)
	c.wantRep(c.opt(OptList, nil), RepAck)
	c.wantRep(c.opt(OptGo, infoPayload("")), RepAck)
	c.wantErrno(c.read(0, 512, 0), 0)
	c.disc()
}

func TestList(t *testing.T) {
	ts, _, _ := multiExportServer(t)
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	rs := c.opt(OptList, nil)
	c.wantRep(rs, RepAck)
	var got []string
	for _, r := range rs[:len(rs)-1] {
		if r.rep != RepServer {
			t.Fatalf("reply %v", r.rep)
		}
		b := readBuf(r.data)
		n := b.u32()
		got = append(got, string(b[:n])+"|"+string(b[n:]))
	}
	want := []string{"|default disk", "ro|read-only disk", "plain|"}
	if !slices.Equal(got, want) {
		t.Errorf("LIST %q, want %q", got, want)
	}
	// LIST with data: ERR_INVALID, and the payload is consumed.
	c.wantRep(c.opt(OptList, []byte("junk")), RepErrInvalid)
	c.wantRep(c.opt(OptList, nil), RepAck)
}

func TestAbort(t *testing.T) {
	hooks := newHookRecorder()
	ts := startServer(t, Config{Hooks: hooks})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptAbort, []byte("ignored data")), RepAck)
	c.expectClosed()
	waitFor(t, "hook", func() bool { return hooks.handshakeLog() == ":aborted" })
}

func TestUnknownOptions(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	for _, o := range []Opt{0, OptPeekExport, 12, 0x7fffffff, 0xffffffff} {
		rs := c.opt(o, bytes.Repeat([]byte{0xaa}, 100))
		c.wantRep(rs, RepErrUnsup)
		if len(rs[0].data) > MaxStringLen {
			t.Errorf("error message of %d bytes", len(rs[0].data))
		}
	}
	c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
}

func TestStructuredAndExtendedNegotiation(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptStructuredReply, []byte{1}), RepErrInvalid)
	c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
	c.wantRep(c.opt(OptStructuredReply, nil), RepErrInvalid)
	c.wantRep(c.opt(OptExtendedHeaders, []byte{1}), RepErrInvalid)
	c.wantRep(c.opt(OptExtendedHeaders, nil), RepAck)
	c.wantRep(c.opt(OptExtendedHeaders, nil), RepErrInvalid)
	c.wantRep(c.opt(OptStructuredReply, nil), RepErrExtHeaderReqd)
	// EXPORT_NAME after extended headers is a violation: hard disconnect.
	c.sendOpt(OptExportName, nil)
	c.expectClosed()
	ts.stillServes()

	ts2 := startServer(t, Config{NoExtendedHeaders: true})
	c = ts2.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptExtendedHeaders, nil), RepErrUnsup)
}

func TestStartTLSRefused(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptStartTLS, nil), RepErrPolicy)
	c.wantRep(c.opt(OptStartTLS, nil), RepErrPolicy)
	c.wantRep(c.opt(OptStartTLS, []byte("x")), RepErrInvalid)
	// State negotiated before a refused STARTTLS is kept (nothing was reset).
	c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
	c.wantRep(c.opt(OptStartTLS, nil), RepErrPolicy)
	c.wantRep(c.opt(OptStructuredReply, nil), RepErrInvalid)
}

func TestNegotiationReset(t *testing.T) {
	n := &negotiation{fixed: true, mode: modeExtended, metaExport: &export{},
		metas: []metaContext{{id: 1}}, options: 3, refused: true, tlsRefused: true}
	n.resetForTLS()
	if !reflect.DeepEqual(*n, negotiation{fixed: true, options: 3}) {
		t.Fatalf("reset left %+v", n)
	}
}

func metaNames(rs []optReply) []string {
	var out []string
	for _, r := range rs {
		if r.rep == RepMetaContext {
			out = append(out, string(r.data[4:]))
		}
	}
	return out
}

func TestListMetaContext(t *testing.T) {
	ts, _, _ := multiExportServer(t)
	depth := startServer(t, Config{}) // AllocationDepth on
	for _, tc := range []struct {
		ts      *testServer
		export  string
		queries []string
		want    []string
	}{
		{depth, "", nil, []string{MetaBaseAllocation, MetaQemuAllocationDepth}},
		{ts, "", nil, []string{MetaBaseAllocation}},
		{depth, "", []string{"base:"}, []string{MetaBaseAllocation}},
		{depth, "", []string{"qemu:"}, []string{MetaQemuAllocationDepth}},
		{ts, "", []string{"qemu:"}, nil},
		{depth, "", []string{"qemu:allocation-depth", "base:allocation"}, []string{MetaBaseAllocation, MetaQemuAllocationDepth}},
		{depth, "", []string{"x-foo:bar", "nocolon", "base:other", "qemu:dirty-bitmap:"}, nil},
		{ts, "ro", []string{"base:allocation"}, []string{MetaBaseAllocation}},
	} {
		c := tc.ts.dial()
		c.sendFlags(FlagCFixedNewstyle)
		rs := c.opt(OptListMetaContext, metaPayload(tc.export, tc.queries...))
		c.wantRep(rs, RepAck)
		if got := metaNames(rs); !slices.Equal(got, tc.want) {
			t.Errorf("LIST_META_CONTEXT %q: %q, want %q", tc.queries, got, tc.want)
		}
		for _, r := range rs {
			if r.rep == RepMetaContext && be.Uint32(r.data) != 0 {
				t.Errorf("LIST gave context id %d, want 0", be.Uint32(r.data))
			}
		}
		c.wantRep(c.opt(OptListMetaContext, metaPayload("missing")), RepErrUnknown)
	}
}

func TestSetMetaContext(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	// Needs structured replies first.
	c.wantRep(c.opt(OptSetMetaContext, metaPayload("", "base:allocation")), RepErrInvalid)
	c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
	for _, tc := range []struct {
		queries []string
		want    []string
	}{
		{nil, nil},
		{[]string{"base:"}, nil},
		{[]string{"qemu:"}, nil},
		{[]string{"base:allocation"}, []string{MetaBaseAllocation}},
		{[]string{"qemu:allocation-depth", "base:allocation", "x-y:z"}, []string{MetaBaseAllocation, MetaQemuAllocationDepth}},
	} {
		rs := c.opt(OptSetMetaContext, metaPayload("", tc.queries...))
		c.wantRep(rs, RepAck)
		if got := metaNames(rs); !slices.Equal(got, tc.want) {
			t.Errorf("SET_META_CONTEXT %q: %q, want %q", tc.queries, got, tc.want)
		}
		ids := map[uint32]bool{}
		for _, r := range rs {
			if r.rep == RepMetaContext {
				ids[be.Uint32(r.data)] = true
			}
		}
		if len(ids) != len(tc.want) {
			t.Errorf("context ids not unique: %v", ids)
		}
	}
	c.wantRep(c.opt(OptSetMetaContext, metaPayload("missing", "base:allocation")), RepErrUnknown)
	// Syntactically invalid: a query length running past the option.
	bad := writeBuf(nil).u32(0).u32(1).u32(100).str("base:allocation")
	c.wantRep(c.opt(OptSetMetaContext, bad), RepErrInvalid)
	// Count that cannot fit.
	bad = writeBuf(nil).u32(0).u32(1000)
	c.wantRep(c.opt(OptSetMetaContext, bad), RepErrInvalid)
	// Trailing garbage.
	c.wantRep(c.opt(OptSetMetaContext, append(metaPayload(""), 1, 2)), RepErrInvalid)
	// The connection is still usable.
	c.wantRep(c.opt(OptGo, infoPayload("")), RepAck)
}

func TestHandshakeHooks(t *testing.T) {
	hooks := newHookRecorder()
	// The limit must outlast the first two handshakes on a loaded machine (200 ms did not
	// always), and only the third, idle, connection reaches it.
	ts := startServer(t, Config{Hooks: hooks, HandshakeLimit: 2 * time.Second})
	c := ts.connect(clientOpts{})
	c.disc()
	c = ts.dial()
	c.sendFlags(0xff)
	c.expectClosed()
	c = ts.dial() // times out
	c.expectClosed()
	waitFor(t, "hooks", func() bool { return hooks.handshakeLog() == ":ok,:rejected,:timeout" })
}

// A client that gives up after the server refused its export or TLS is counted rejected
// (the misconfigured clients an operator looks for), whether it aborts, as libnbd and qemu
// do, or just closes; one that aborts after a successful INFO was not refused.
func TestHandshakeHooksRefusedThenAbort(t *testing.T) {
	hooks := newHookRecorder()
	ts := startServer(t, Config{Hooks: hooks})
	step := func(want string, talk func(c *tclient)) {
		t.Helper()
		c := ts.dial()
		c.sendFlags(FlagCFixedNewstyle)
		talk(c)
		waitFor(t, want, func() bool { return strings.HasSuffix(hooks.handshakeLog(), want) })
	}
	step(":rejected", func(c *tclient) {
		c.wantRep(c.opt(OptGo, infoPayload("missing")), RepErrUnknown)
		c.wantRep(c.opt(OptAbort, nil), RepAck)
		c.expectClosed()
	})
	step(",:rejected", func(c *tclient) {
		c.wantRep(c.opt(OptStartTLS, nil), RepErrPolicy)
		c.nc.Close()
	})
	step(",:rejected", func(c *tclient) {
		c.wantRep(c.opt(OptListMetaContext, metaPayload("missing", "base:allocation")), RepErrUnknown)
		c.wantRep(c.opt(OptAbort, nil), RepAck)
		c.expectClosed()
	})
	step(",:aborted", func(c *tclient) {
		c.wantRep(c.opt(OptInfo, infoPayload("")), RepAck)
		c.wantRep(c.opt(OptAbort, nil), RepAck)
		c.expectClosed()
	})
	if got, want := hooks.handshakeLog(), ":rejected,:rejected,:rejected,:aborted"; got != want {
		t.Errorf("handshake results %q, want %q", got, want)
	}
}
