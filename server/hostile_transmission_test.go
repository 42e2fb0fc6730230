// The hostile-client catalog (docs/hostile-clients.md), transmission items 17-31, plus
// disconnect injection across a whole session. Each test asserts the spec's answer or a hard
// disconnect, that the server keeps serving, and that no goroutine outlives it.
package server

import (
	"bytes"
	"net"
	"runtime"
	"testing"
	"time"
)

// 17. Bad request magic.
func TestHostile17RequestMagic(t *testing.T) {
	ts := hostileServer(t, Config{})
	for _, o := range []clientOpts{{}, {extended: true}} {
		c := ts.connect(o)
		hdr := AppendRequest(nil, Request{Type: CmdRead, Length: 512}, o.extended)
		hdr[0] ^= 0xff
		c.write(hdr)
		c.expectClosed()
	}
	// A compact request on an extended connection is a bad magic too.
	c := ts.connect(clientOpts{extended: true})
	c.write(AppendRequest(nil, Request{Type: CmdRead, Length: 512}, false))
	c.write(make([]byte, 4))
	c.expectClosed()
}

// 18. Unknown command.
func TestHostile18UnknownCommand(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.connect(clientOpts{structured: true})
	c.wantErrno(c.do(Request{Type: 0xffff, Offset: 1, Length: 1}, nil), EINVAL)
	c.wantErrno(c.read(0, 1, 0), 0)
	c.disc()
}

// 19. Unknown flag bits; a flag not valid for the command.
func TestHostile19BadFlags(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.connect(clientOpts{structured: true})
	c.wantErrno(c.read(0, 512, 0xffff), EINVAL)
	c.wantErrno(c.read(0, 512, CmdFlagFastZero), EINVAL)
	c.wantErrno(c.do(Request{Type: CmdTrim, Length: 512, Flags: CmdFlagDF}, nil), EINVAL)
	c.wantErrno(c.read(0, 512, CmdFlagDF|CmdFlagFUA), 0)
	c.disc()
}

// 20. Offset 2^64-1, offset+length wrapping, offset = size with length 0, length 0 for every
// command.
func TestHostile20Offsets(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.connect(clientOpts{extended: true, metas: []string{MetaBaseAllocation}})
	for _, typ := range []Cmd{CmdRead, CmdWrite, CmdTrim, CmdCache, CmdWriteZeroes, CmdBlockStatus} {
		want := EINVAL // writes too, as qemu-nbd 7.2 answers
		var p []byte
		if typ == CmdWrite {
			p = make([]byte, 16)
		}
		c.wantErrno(c.do(Request{Type: typ, Offset: ^uint64(0), Length: 16}, p), want)
		c.wantErrno(c.do(Request{Type: typ, Offset: 1 << 63, Length: 1<<63 + 16}, p), want)
		// Length 0 at the end: fine, except BLOCK_STATUS which cannot describe nothing.
		if typ == CmdWrite {
			p = []byte{}
		}
		wantZero := Errno(0)
		if typ == CmdBlockStatus {
			wantZero = EINVAL
		}
		c.wantErrno(c.do(Request{Type: typ, Offset: testSize}, p), wantZero)
	}
	c.wantErrno(c.do(Request{Type: CmdFlush}, nil), 0)
	c.disc()
}

// 21. Lengths above the maximum for READ, and for WRITE with and without the payload.
func TestHostile21OversizeLengths(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.connect(clientOpts{structured: true})
	c.wantErrno(c.read(0, MaxPayload+1, 0), EINVAL)
	c.wantErrno(c.read(0, 0xffffffff, 0), EINVAL)
	// WRITE over the maximum: EINVAL, then the connection closes without reading the
	// payload, as qemu-nbd does, however long the payload claims to be.
	for _, n := range []uint64{MaxPayload + 1, 2*MaxPayload + 1, 0xffffffff} {
		c = ts.connect(clientOpts{structured: n%2 == 1})
		c.send(Request{Type: CmdWrite, Length: n, Cookie: 7}, nil)
		c.wantErrno(c.recv(), EINVAL)
		c.expectClosed()
	}
	// Extended headers: a payload length over the maximum on any command, the same.
	c = ts.connect(clientOpts{extended: true})
	c.send(Request{Type: CmdFlush, Flags: CmdFlagPayloadLen, Length: 1 << 40, Cookie: 8}, nil)
	c.wantErrno(c.recv(), EINVAL)
	c.expectClosed()
}

// 22. Unaligned requests when a minimum block size was advertised: served, as qemu-nbd serves
// them on a probed raw image (minimum 512), whose block layer rewrites the partial blocks. The
// minimum is advertised to INFO and to a GO that asks for BLOCK_SIZE, 1 to a GO that does not.
func TestHostile22Unaligned(t *testing.T) {
	m := newMem(testSize + 100) // a partial last block
	ts := hostileServer(t, Config{Exports: []*Export{{Backend: m, MinBlockSize: 512}, {Name: "x", Backend: newMem(4096)}}})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	minimum := func(rs []optReply) uint32 { return be.Uint32(parseInfos(rs)[InfoBlockSize]) }
	rs := c.opt(OptInfo, infoPayload(""))
	c.wantRep(rs, RepAck)
	if got := minimum(rs); got != 512 {
		t.Errorf("INFO: minimum block size %d, want 512", got)
	}
	rs = c.opt(OptGo, infoPayload("", InfoBlockSize))
	c.wantRep(rs, RepAck)
	if got := minimum(rs); got != 512 {
		t.Fatalf("GO with BLOCK_SIZE: minimum block size %d, want 512", got)
	}
	// Served anyway, as qemu-nbd serves them.
	c.wantErrno(c.read(1, 512, 0), 0)
	c.wantErrno(c.read(512, 100, 0), 0)
	c.wantErrno(c.writeAt(100, make([]byte, 512), 0), 0)
	c.wantErrno(c.do(Request{Type: CmdTrim, Offset: 7, Length: 512}, nil), 0)
	c.wantErrno(c.read(512, 1024, 0), 0)
	c.wantErrno(c.read(testSize, 100, 0), 0) // the tail may be partial
	c.disc()

	c = ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	rs = c.opt(OptGo, infoPayload(""))
	c.wantRep(rs, RepAck)
	if got := minimum(rs); got != 1 {
		t.Errorf("GO without BLOCK_SIZE: minimum block size %d, want 1", got)
	}
	c.disc()
	if _, err := newExport(&Export{Backend: m, MinBlockSize: 3}); err == nil {
		t.Errorf("minimum block size 3 accepted")
	}
}

// 23. WRITE, TRIM or WRITE_ZEROES on a read-only export.
func TestHostile23ReadOnly(t *testing.T) {
	ts := hostileServer(t, Config{Exports: []*Export{{Backend: newMem(testSize), ReadOnly: true, Trim: true}}})
	c := ts.connect(clientOpts{structured: true})
	// EINVAL, as qemu-nbd 7.2 answers (the spec's EPERM is a SHOULD).
	c.wantErrno(c.writeAt(0, []byte{1}, 0), EINVAL)
	c.wantErrno(c.do(Request{Type: CmdTrim, Length: 1}, nil), EINVAL)
	c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Length: 1, Flags: CmdFlagNoHole}, nil), EINVAL)
	c.disc()
}

// 24. FLUSH with offset or length not zero.
func TestHostile24FlushFields(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.connect(clientOpts{})
	// Ignored inside the export, as qemu-nbd ignores them; past its end, EINVAL.
	c.wantErrno(c.do(Request{Type: CmdFlush, Offset: 4096}, nil), 0)
	c.wantErrno(c.do(Request{Type: CmdFlush, Length: 4096}, nil), 0)
	c.wantErrno(c.do(Request{Type: CmdFlush, Offset: testSize + 1}, nil), EINVAL)
	c.wantErrno(c.do(Request{Type: CmdFlush}, nil), 0)
	c.disc()
}

// 25. DF without structured replies; BLOCK_STATUS without a metadata context.
func TestHostile25DFAndStatusWithoutNegotiation(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.connect(clientOpts{})
	c.wantErrno(c.read(0, 512, CmdFlagDF), EINVAL)
	c.wantErrno(c.do(Request{Type: CmdBlockStatus, Length: 512}, nil), EINVAL)
	c.disc()
	c = ts.connect(clientOpts{structured: true})
	c.wantErrno(c.do(Request{Type: CmdBlockStatus, Length: 512}, nil), EINVAL)
	c.disc()
}

// 26. A cookie reused while in flight: both requests are answered with it.
func TestHostile26CookieReuse(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.connect(clientOpts{structured: true})
	c.wantErrno(c.writeAt(0, pattern(8192, 1), 0), 0)
	gate := ts.mem.hold()
	req := Request{Type: CmdRead, Length: 4096, Cookie: 42}
	c.write(AppendRequest(nil, req, false))
	c.write(AppendRequest(nil, req, false))
	ts.mem.unhold(gate)
	for range 2 {
		c.setSent(req)
		r := c.recv()
		if r.cookie != 42 || r.errno != 0 {
			t.Fatalf("reply %+v", r)
		}
	}
	c.disc()
}

// 27. Thousands of pipelined requests without reading replies: memory stays bounded.
func TestHostile27PipelineBackpressure(t *testing.T) {
	const inflight, budgetBytes = 8, 4 * MaxPayload
	ts := hostileServer(t, Config{MaxInFlight: inflight, MaxInFlightBytes: budgetBytes})
	c := ts.connect(clientOpts{structured: true})
	c.wantErrno(c.writeAt(0, pattern(testSize, 2), 0), 0)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapInuse
	// A million 1 MiB READs (a terabyte of replies if nothing pushed back), written in
	// batches; the writer blocks once the server stops reading.
	const batch, batches = 1000, 1000
	sent := make(chan int)
	go func() {
		i := 0
		defer func() { sent <- i }()
		c.nc.SetWriteDeadline(time.Now().Add(3 * time.Second))
		var b []byte
		for range batch {
			b = AppendRequest(b, Request{Type: CmdRead, Length: testSize, Cookie: 1}, false)
		}
		for ; i < batches; i++ {
			if _, err := c.nc.Write(b); err != nil {
				return // blocked: the server stopped reading
			}
		}
	}()
	if got := <-sent; got == batches {
		t.Errorf("all %d requests were accepted: no backpressure", batch*batches)
	}
	runtime.ReadMemStats(&ms)
	if grew := int64(ms.HeapInuse) - int64(before); grew > 256<<20 {
		t.Errorf("heap grew by %d MiB with a client not reading", grew>>20)
	}
	var peakSlots int
	var peakBytes int64
	ts.srv.mu.Lock()
	for sc := range ts.srv.conns {
		s, b := sc.budgetPeak()
		peakSlots, peakBytes = max(peakSlots, s), max(peakBytes, b)
	}
	ts.srv.mu.Unlock()
	if peakSlots > inflight || peakBytes > budgetBytes || peakSlots == 0 {
		t.Errorf("peak %d requests / %d bytes in flight, limits %d / %d", peakSlots, peakBytes, inflight, budgetBytes)
	}
	c.nc.Close() // the server must wind down despite everything queued
	ts.waitConns(0)
}

// 28. Disconnect in the middle of a header or a write payload.
func TestHostile28CutMidRequest(t *testing.T) {
	ts := hostileServer(t, Config{})
	for _, cut := range []int{1, 4, 27, 28 + 1, 28 + 4095} {
		c := ts.connect(clientOpts{})
		full := append(AppendRequest(nil, Request{Type: CmdWrite, Length: 4096, Cookie: 1}, false),
			bytes.Repeat([]byte{0xee}, 4096)...)
		c.write(full[:cut])
		c.nc.Close()
	}
	ts.waitConns(0)
	if data, _ := ts.mem.snapshot(); data[0] == 0xee {
		t.Errorf("a cut WRITE reached the backend")
	}
}

// 29. NBD_CMD_DISC with requests in flight: all are answered first; bytes after DISC are
// ignored.
func TestHostile29DiscWithInflight(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.connect(clientOpts{structured: true})
	gate := ts.mem.hold()
	for i := range 3 {
		c.send(Request{Type: CmdWrite, Offset: uint64(i) * 512}, bytes.Repeat([]byte{byte(i + 1)}, 512))
	}
	c.send(Request{Type: CmdDisc}, nil)
	c.write(AppendRequest(nil, Request{Type: CmdWrite, Offset: 4096, Length: 4, Cookie: 99}, false))
	c.write([]byte{9, 9, 9, 9})
	time.Sleep(50 * time.Millisecond)
	ts.mem.unhold(gate)
	c.delSent(4) // DISC has no reply
	for range 3 {
		if r := c.recv(); r.errno != 0 {
			t.Fatalf("in-flight write failed: %v", r.errno)
		}
	}
	c.expectClosed()
	data, _ := ts.mem.snapshot()
	if data[0] != 1 || data[512] != 2 || data[1024] != 3 || data[4096] != 0 {
		t.Fatalf("writes %v %v %v, after-DISC byte %v", data[0], data[512], data[1024], data[4096])
	}
}

// 30. A half-closed socket: the client stops writing but still reads.
func TestHostile30HalfClose(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.connect(clientOpts{})
	gate := ts.mem.hold()
	c.send(Request{Type: CmdWrite, Offset: 0}, []byte("hello"))
	c.send(Request{Type: CmdRead, Length: 5}, nil)
	c.nc.(*net.TCPConn).CloseWrite()
	time.Sleep(20 * time.Millisecond)
	ts.mem.unhold(gate)
	for range 2 {
		if r := c.recv(); r.errno != 0 {
			t.Fatalf("errno %v", r.errno)
		}
	}
	c.expectClosed()
}

// 31. The client killed with writes in flight, then a reconnect and a data check: every
// write that was acknowledged is there.
func TestHostile31KillAndReconnect(t *testing.T) {
	ts := hostileServer(t, Config{})
	c := ts.connect(clientOpts{structured: true})
	acked := pattern(8192, 11)
	c.wantErrno(c.writeAt(0, acked, CmdFlagFUA), 0)
	gate := ts.mem.hold()
	for i := range 4 {
		c.send(Request{Type: CmdWrite, Offset: 65536 + uint64(i)*4096}, pattern(4096, uint64(i)))
	}
	<-ts.mem.entered
	c.nc.Close() // killed
	ts.mem.unhold(gate)
	ts.waitConns(0)
	c = ts.connect(clientOpts{structured: true})
	r := c.read(0, 8192, 0)
	if !bytes.Equal(r.data, acked) {
		t.Fatalf("acknowledged write lost")
	}
	// Unacknowledged writes are each either fully old or fully new.
	for i := range 4 {
		r := c.read(65536+uint64(i)*4096, 4096, 0)
		if !bytes.Equal(r.data, pattern(4096, uint64(i))) && !bytes.Equal(r.data, make([]byte, 4096)) {
			t.Fatalf("write %d torn", i)
		}
	}
	c.disc()
}

// Disconnect injection: a full session (options, then one of each command including a
// 4 KiB WRITE) cut at every byte of the handshake and of each request header, and every
// 512 bytes of the payload, in each reply mode. runSession fails on a panic or a hang.
func TestCutSessionEverywhere(t *testing.T) {
	checkLeaks(t)
	cuts := 0
	for mode := range byte(3) {
		hs := handshakePrefix(mode)
		ext := mode == 2
		script := append([]byte(nil), hs...)
		bounds := []int{}
		add := func(r Request, payload []byte) {
			if ext && payload != nil {
				r.Flags |= CmdFlagPayloadLen
			}
			if payload != nil {
				r.Length = uint64(len(payload))
			}
			start := len(script)
			script = AppendRequest(script, r, ext)
			for i := start; i < len(script); i++ {
				bounds = append(bounds, i)
			}
			for i := 0; i < len(payload); i += 512 {
				bounds = append(bounds, len(script)+i)
			}
			script = append(script, payload...)
		}
		add(Request{Type: CmdWrite, Offset: 4096, Cookie: 1}, bytes.Repeat([]byte{1}, 4096))
		add(Request{Type: CmdRead, Length: 8192, Cookie: 2}, nil)
		add(Request{Type: CmdFlush, Cookie: 3}, nil)
		add(Request{Type: CmdTrim, Length: 4096, Cookie: 4}, nil)
		add(Request{Type: CmdWriteZeroes, Length: 4096, Cookie: 5}, nil)
		add(Request{Type: CmdCache, Length: 4096, Cookie: 6}, nil)
		if mode > 0 {
			add(Request{Type: CmdBlockStatus, Length: 8192, Cookie: 7}, nil)
		}
		add(Request{Type: CmdDisc}, nil)
		for i := range hs {
			bounds = append(bounds, i)
		}
		bounds = append(bounds, len(script))
		for _, cut := range bounds {
			runSession(t, script[:cut])
			cuts++
		}
	}
	t.Logf("%d disconnect points", cuts)
}
