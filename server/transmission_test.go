// Transmission tests: every command in simple, structured and extended mode, the errno rules,
// sparse and DF reads, block status, and out-of-order replies.
package server

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
)

var modes = []struct {
	name string
	o    clientOpts
}{
	{"simple", clientOpts{}},
	{"structured", clientOpts{structured: true, metas: []string{MetaBaseAllocation, MetaQemuAllocationDepth}}},
	{"extended", clientOpts{extended: true, metas: []string{MetaBaseAllocation, MetaQemuAllocationDepth}}},
}

func forModes(t *testing.T, f func(t *testing.T, ts *testServer, c *tclient)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ts := startServer(t, Config{})
			c := ts.connect(m.o)
			f(t, ts, c)
			c.disc()
		})
	}
}

func pattern(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(r.Uint32())
	}
	return p
}

func TestWriteReadBack(t *testing.T) {
	forModes(t, func(t *testing.T, ts *testServer, c *tclient) {
		p := pattern(70000, 1)
		c.wantErrno(c.writeAt(12345, p, 0), 0)
		r := c.read(12345, uint64(len(p)), 0)
		c.wantErrno(r, 0)
		if !bytes.Equal(r.data, p) {
			t.Fatalf("read back differs")
		}
		// Unaligned small pieces.
		c.wantErrno(c.writeAt(1, []byte{9}, 0), 0)
		r = c.read(0, 3, 0)
		if !bytes.Equal(r.data, []byte{0, 9, 0}) {
			t.Fatalf("got %v", r.data)
		}
		// The whole export in one maximal read.
		r = c.read(0, testSize, 0)
		c.wantErrno(r, 0)
		if data, _ := ts.mem.snapshot(); !bytes.Equal(r.data, data) {
			t.Fatalf("full read differs")
		}
	})
}

func TestZeroLengthRequests(t *testing.T) {
	forModes(t, func(t *testing.T, ts *testServer, c *tclient) {
		for _, off := range []uint64{0, testSize} {
			c.wantErrno(c.read(off, 0, 0), 0)
			c.wantErrno(c.writeAt(off, []byte{}, 0), 0)
			c.wantErrno(c.do(Request{Type: CmdTrim, Offset: off}, nil), 0)
			c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Offset: off}, nil), 0)
			c.wantErrno(c.do(Request{Type: CmdCache, Offset: off}, nil), 0)
		}
		if c.mode != modeSimple {
			// "the server MUST return at least one status descriptor": zero length cannot succeed.
			c.wantErrno(c.do(Request{Type: CmdBlockStatus, Length: 0}, nil), EINVAL)
		}
	})
}

func TestRangeErrors(t *testing.T) {
	forModes(t, func(t *testing.T, ts *testServer, c *tclient) {
		const size = testSize
		for _, tc := range []struct {
			typ  Cmd
			off  uint64
			n    uint64
			want Errno
		}{
			{CmdRead, size, 1, EINVAL},
			{CmdRead, size - 1, 2, EINVAL},
			{CmdRead, ^uint64(0), 1, EINVAL},
			{CmdRead, ^uint64(0) - 10, 4096, EINVAL}, // offset+length wraps
			// qemu-nbd 7.2 answers EINVAL for writes too (the spec's ENOSPC is a SHOULD).
			{CmdWrite, size, 1, EINVAL},
			{CmdWrite, ^uint64(0), 512, EINVAL},
			{CmdWriteZeroes, size - 512, 1024, EINVAL},
			{CmdWriteZeroes, ^uint64(0) - 1, 4, EINVAL},
			{CmdTrim, size - 1, 2, EINVAL},
			{CmdCache, size, 1, EINVAL},
			{CmdBlockStatus, size, 1, EINVAL},
			{CmdBlockStatus, ^uint64(0), 1, EINVAL},
		} {
			if tc.typ == CmdBlockStatus && c.mode == modeSimple {
				continue
			}
			var payload []byte
			r := Request{Type: tc.typ, Offset: tc.off, Length: tc.n}
			if tc.typ == CmdWrite {
				payload = make([]byte, tc.n)
			}
			rep := c.do(r, payload)
			if rep.errno != tc.want {
				t.Errorf("%v off=%d len=%d: %v, want %v", tc.typ, tc.off, tc.n, rep.errno, tc.want)
			}
		}
		// Lengths above the maximum block size.
		c.wantErrno(c.read(0, MaxPayload+1, 0), EINVAL)
		c.wantErrno(c.do(Request{Type: CmdCache, Length: MaxPayload + 1}, nil), EINVAL)
		if c.mode != modeSimple {
			// qemu-nbd checks the length before the flags: EINVAL, not EOVERFLOW.
			c.wantErrno(c.read(0, MaxPayload+1, CmdFlagDF), EINVAL)
		}
		// TRIM and WRITE_ZEROES effect lengths may exceed it (here: past the end instead).
		c.wantErrno(c.do(Request{Type: CmdTrim, Length: size}, nil), 0)
		c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Length: size}, nil), 0)
	})
}

func TestFlagsValidation(t *testing.T) {
	forModes(t, func(t *testing.T, ts *testServer, c *tclient) {
		// FUA is accepted on every command.
		for _, typ := range []Cmd{CmdRead, CmdFlush, CmdTrim, CmdCache, CmdWriteZeroes} {
			c.wantErrno(c.do(Request{Type: typ, Flags: CmdFlagFUA, Length: lenFor(typ)}, nil), 0)
		}
		c.wantErrno(c.writeAt(0, []byte{1}, CmdFlagFUA), 0)
		if ts.mem.fuaWrites.Load() != 1 {
			t.Errorf("FUA not passed to the backend")
		}
		// A flag not documented for the command, and unknown bits.
		for _, tc := range []struct {
			typ   Cmd
			flags CmdFlags
		}{
			{CmdRead, CmdFlagNoHole},
			{CmdRead, CmdFlagReqOne},
			{CmdWrite, CmdFlagDF},
			{CmdFlush, CmdFlagFastZero},
			{CmdTrim, CmdFlagNoHole},
			{CmdCache, CmdFlagDF},
			{CmdWriteZeroes, CmdFlagDF},
			{CmdBlockStatus, CmdFlagNoHole},
			{CmdRead, 1 << 6},
			{CmdWrite, 1 << 15},
		} {
			if tc.typ == CmdBlockStatus && c.mode == modeSimple {
				continue
			}
			var payload []byte
			if tc.typ == CmdWrite {
				payload = []byte{1, 2, 3}
			}
			rep := c.do(Request{Type: tc.typ, Flags: tc.flags, Length: lenFor(tc.typ)}, payload)
			if rep.errno != EINVAL {
				t.Errorf("%v with %v: %v, want EINVAL", tc.typ, tc.flags, rep.errno)
			}
		}
		if c.mode == modeSimple {
			// DF without structured replies (SEND_DF was not advertised).
			c.wantErrno(c.read(0, 512, CmdFlagDF), EINVAL)
			// BLOCK_STATUS without any context.
			c.wantErrno(c.do(Request{Type: CmdBlockStatus, Length: 512}, nil), EINVAL)
		}
		// Unknown commands, including RESIZE.
		for _, typ := range []Cmd{CmdResize, 9, 0x100, 0xffff} {
			c.wantErrno(c.do(Request{Type: typ, Length: 512}, nil), EINVAL)
		}
		// FLUSH with a nonzero offset or length inside the export: served, as qemu-nbd does.
		c.wantErrno(c.do(Request{Type: CmdFlush, Offset: 1}, nil), 0)
		c.wantErrno(c.do(Request{Type: CmdFlush, Length: 1}, nil), 0)
		// The connection survives all of it.
		c.wantErrno(c.read(0, 16, 0), 0)
	})
}

func lenFor(t Cmd) uint64 {
	if t == CmdFlush {
		return 0
	}
	return 512
}

func TestFlushTrimZeroCache(t *testing.T) {
	forModes(t, func(t *testing.T, ts *testServer, c *tclient) {
		m := ts.mem
		c.wantErrno(c.writeAt(0, bytes.Repeat([]byte{7}, 3*memBlock), 0), 0)
		c.wantErrno(c.do(Request{Type: CmdFlush}, nil), 0)
		if m.flushes.Load() != 1 {
			t.Errorf("flushes %d", m.flushes.Load())
		}
		c.wantErrno(c.do(Request{Type: CmdTrim, Offset: memBlock, Length: memBlock}, nil), 0)
		data, alloc := m.snapshot()
		if m.trims.Load() != 1 || data[memBlock] != 0 || alloc[1] {
			t.Errorf("trim not applied")
		}
		c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Offset: 0, Length: 10, Flags: CmdFlagNoHole}, nil), 0)
		if zf := m.lastZero.Load().(ZeroFlags); !zf.NoHole || zf.FastZero {
			t.Errorf("zero flags %+v", zf)
		}
		c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Offset: 0, Length: 10, Flags: CmdFlagFastZero | CmdFlagFUA}, nil), 0)
		if zf := m.lastZero.Load().(ZeroFlags); zf.NoHole || !zf.FastZero || !zf.FUA {
			t.Errorf("zero flags %+v (Trim on: NO_HOLE not implied)", zf)
		}
		if data, _ := m.snapshot(); !bytes.Equal(data[:12], []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7, 7}) {
			t.Errorf("zeroes not written: %v", data[:12])
		}
		m.failZero.Store(syscall.EOPNOTSUPP)
		c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Length: 10, Flags: CmdFlagFastZero}, nil), ENOTSUP)
		// Without FAST_ZERO an ENOTSUP from the backend must not surface as NBD_ENOTSUP.
		c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Length: 10}, nil), EINVAL)
		m.failZero.Store(nil)
		c.wantErrno(c.do(Request{Type: CmdCache, Offset: 0, Length: 4096}, nil), 0)
		if m.caches.Load() != 1 {
			t.Errorf("cache not called")
		}
	})
}

func TestPlainBackendEmulation(t *testing.T) {
	m := newMem(64 << 10)
	ts := startServer(t, Config{Exports: []*Export{{Backend: plainBackend{m}, Trim: true}}})
	c := ts.connect(clientOpts{structured: true, metas: []string{MetaBaseAllocation}})
	// TRIM is advertised (as qemu-nbd does with discard=ignore) and succeeds without effect.
	if c.flags&FlagSendTrim == 0 {
		t.Fatalf("SEND_TRIM not advertised on a writable export")
	}
	c.wantErrno(c.writeAt(0, bytes.Repeat([]byte{5}, 4096), 0), 0)
	c.wantErrno(c.do(Request{Type: CmdTrim, Length: 512}, nil), 0)
	if data, _ := m.snapshot(); data[0] != 5 {
		t.Fatalf("TRIM without a Trimmer changed the data")
	}
	// WRITE_ZEROES emulated by writing zeros; FAST_ZERO fails fast.
	c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Length: 10, Flags: CmdFlagFastZero}, nil), ENOTSUP)
	if data, _ := m.snapshot(); data[0] != 5 {
		t.Fatalf("failed FAST_ZERO changed the data")
	}
	c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Offset: 1, Length: 4000}, nil), 0)
	if data, _ := m.snapshot(); data[0] != 5 || data[1] != 0 || data[4000] != 0 || data[4001] != 5 {
		t.Fatalf("emulated zeroes wrong")
	}
	// CACHE is a successful no-op; BLOCK_STATUS reports all data.
	c.wantErrno(c.do(Request{Type: CmdCache, Length: 4096}, nil), 0)
	r := c.do(Request{Type: CmdBlockStatus, Length: 64 << 10}, nil)
	c.wantErrno(r, 0)
	if got := r.status[metaIDBase]; len(got) != 1 || got[0] != (Extent{Length: 64 << 10}) {
		t.Fatalf("status %v", got)
	}
	// Reads are never sparse without a BlockStatuser.
	r = c.read(8192, 16384, 0)
	if r.holes != 0 || r.datas != 1 {
		t.Fatalf("holes %d datas %d", r.holes, r.datas)
	}
	c.disc()
}

func TestReadOnlyExport(t *testing.T) {
	m := newMem(testSize)
	ts := startServer(t, Config{Exports: []*Export{{Backend: m, ReadOnly: true, Trim: true}}})
	for _, o := range []clientOpts{{}, {structured: true}, {extended: true}} {
		c := ts.connect(o)
		if c.flags&(FlagSendTrim|FlagSendWriteZeroes|FlagSendFastZero) != 0 || c.flags&FlagReadOnly == 0 {
			t.Fatalf("flags %v", c.flags)
		}
		// qemu-nbd 7.2 answers EINVAL, before the range check.
		c.wantErrno(c.writeAt(0, []byte{1}, 0), EINVAL)
		c.wantErrno(c.do(Request{Type: CmdTrim, Length: 512}, nil), EINVAL)
		c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Length: 512}, nil), EINVAL)
		// The read-only check wins over the range check, as in qemu-nbd.
		r := c.writeAt(testSize, []byte{1}, 0)
		c.wantErrno(r, EINVAL)
		if !r.simple && r.msg != "Export is read-only" {
			t.Errorf("write past the end of a read-only export: %q", r.msg)
		}
		c.wantErrno(c.read(0, 512, 0), 0)
		c.wantErrno(c.do(Request{Type: CmdFlush}, nil), 0)
		c.disc()
	}
	if data, _ := m.snapshot(); data[0] != 0 {
		t.Fatalf("read-only export was written")
	}
}

func TestBackendErrors(t *testing.T) {
	forModes(t, func(t *testing.T, ts *testServer, c *tclient) {
		m := ts.mem
		for _, tc := range []struct {
			err  error
			want Errno
		}{
			{syscall.EIO, EIO},
			{syscall.ENOSPC, ENOSPC},
			{syscall.EDQUOT, ENOSPC},
			{syscall.EFBIG, ENOSPC},
			{syscall.EROFS, EPERM},
			{fmt.Errorf("wrapped: %w", syscall.EINVAL), EINVAL},
			{fmt.Errorf("opaque"), EIO},
		} {
			m.failWrite.Store(tc.err)
			c.wantErrno(c.writeAt(0, []byte{1}, 0), tc.want)
		}
		m.failWrite.Store(nil)
		c.wantErrno(c.writeAt(4096, pattern(8192, 4), 0), 0) // data, so the read reaches ReadAt
		m.failRead.Store(syscall.EIO)
		r := c.read(4096, 8192, 0)
		c.wantErrno(r, EIO)
		if c.mode != modeSimple {
			if typ := r.chunks[0].typ; typ != ReplyTypeErrorOffset || r.errOff != 4096 {
				t.Errorf("read error chunk %v at %d", typ, r.errOff)
			}
			if r.msg == "" {
				t.Errorf("no error message")
			}
		}
		m.failRead.Store(nil)
		c.wantErrno(c.read(0, 512, 0), 0)
	})
}

func TestStructuredReplyShapes(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.connect(clientOpts{structured: true})
	// Success of a non-READ command may be a simple reply; a READ error must be a chunk.
	if r := c.writeAt(0, []byte{1}, 0); !r.simple {
		t.Errorf("structured WRITE success not simple")
	}
	r := c.read(testSize, 1, 0)
	c.wantErrno(r, EINVAL)
	if r.simple || r.chunks[0].typ != ReplyTypeError || r.chunks[0].flags&ReplyFlagDone == 0 {
		t.Errorf("READ error reply %+v", r.chunks)
	}
	c.disc()

	c = ts.connect(clientOpts{extended: true})
	for _, req := range []Request{{Type: CmdWrite, Offset: 9}, {Type: CmdFlush}, {Type: CmdRead, Offset: 3, Length: 0}} {
		var p []byte
		if req.Type == CmdWrite {
			p = []byte{1}
		}
		r := c.do(req, p)
		if r.simple || len(r.chunks) != 1 || r.chunks[0].typ != ReplyTypeNone {
			t.Errorf("extended %v reply %+v", req.Type, r.chunks)
		}
	}
	c.disc()
}

func TestSparseRead(t *testing.T) {
	forModes(t, func(t *testing.T, ts *testServer, c *tclient) {
		// Data in blocks 1 and 4 of 0..7; the rest are holes.
		p := pattern(memBlock, 3)
		c.wantErrno(c.writeAt(memBlock, p, 0), 0)
		c.wantErrno(c.writeAt(4*memBlock, p, 0), 0)
		want := make([]byte, 8*memBlock)
		copy(want[memBlock:], p)
		copy(want[4*memBlock:], p)

		r := c.read(0, 8*memBlock, 0)
		c.wantErrno(r, 0)
		if !bytes.Equal(r.data, want) {
			t.Fatalf("sparse read content differs")
		}
		if c.mode != modeSimple && (r.holes != 3 || r.datas != 2) {
			t.Errorf("holes %d datas %d, want 3 and 2", r.holes, r.datas)
		}
		if c.mode == modeSimple {
			return
		}
		// DF: exactly one content chunk, zeros inline.
		r = c.read(0, 8*memBlock, CmdFlagDF)
		c.wantErrno(r, 0)
		if !bytes.Equal(r.data, want) || r.holes+r.datas != 1 || r.datas != 1 {
			t.Fatalf("DF read: holes %d datas %d", r.holes, r.datas)
		}
		// DF over a pure hole: one OFFSET_DATA of zeros, as qemu-nbd sends.
		r = c.read(5*memBlock, 3*memBlock, CmdFlagDF)
		if r.holes != 0 || r.datas != 1 || len(r.chunks) != 1 {
			t.Fatalf("DF hole read: %d chunks", len(r.chunks))
		}
		// Unaligned read across hole/data boundaries.
		r = c.read(memBlock-100, 3*memBlock+200, 0)
		if !bytes.Equal(r.data, want[memBlock-100:4*memBlock+100]) {
			t.Fatalf("unaligned sparse read differs")
		}
		// A failing allocation map just means data.
		ts.mem.failStatus.Store(syscall.EIO)
		r = c.read(0, 8*memBlock, 0)
		if !bytes.Equal(r.data, want) || r.holes != 0 {
			t.Fatalf("read with failing map: holes %d", r.holes)
		}
		ts.mem.failStatus.Store(nil)
	})
}

func TestNoSparseReads(t *testing.T) {
	ts := startServer(t, Config{NoSparseReads: true})
	c := ts.connect(clientOpts{structured: true})
	r := c.read(0, 65536, 0)
	if r.holes != 0 || r.datas != 1 {
		t.Fatalf("holes %d datas %d", r.holes, r.datas)
	}
	c.disc()
}

func TestOutOfOrderReplies(t *testing.T) {
	forModes(t, func(t *testing.T, ts *testServer, c *tclient) {
		c.wantErrno(c.writeAt(0, pattern(4096, 5), 0), 0) // data, so the read reaches ReadAt
		for len(ts.mem.entered) > 0 {
			<-ts.mem.entered
		}
		gate := ts.mem.hold()
		slow := c.send(Request{Type: CmdRead, Length: 4096}, nil)
		<-ts.mem.entered // the read is in the backend
		fast := c.send(Request{Type: CmdFlush}, nil)
		if r := c.recv(); r.cookie != fast {
			t.Fatalf("first reply for %d, want the FLUSH %d", r.cookie, fast)
		}
		ts.mem.unhold(gate)
		if r := c.recv(); r.cookie != slow {
			t.Fatalf("second reply for %d", r.cookie)
		}
	})
}

func TestPipelinedConcurrency(t *testing.T) {
	forModes(t, func(t *testing.T, ts *testServer, c *tclient) {
		const n = 200
		data := pattern(n*512, 9)
		go func() {
			for i := range n {
				c.send(Request{Type: CmdWrite, Offset: uint64(i) * 512, Cookie: uint64(1000 + i)}, data[i*512:(i+1)*512])
			}
		}()
		for range n {
			if r, err := c.tryRecv(); err != nil || r.errno != 0 {
				t.Fatalf("reply %v %v", r, err)
			}
		}
		r := c.read(0, n*512, 0)
		if !bytes.Equal(r.data, data) {
			t.Fatalf("pipelined writes lost")
		}
	})
}

func TestDetectZeroes(t *testing.T) {
	for _, tc := range []struct {
		mode   DetectZeroes
		trim   bool
		zeroed bool
		noHole bool
	}{
		{DetectZeroesOff, true, false, false},
		{DetectZeroesOn, true, true, true},
		{DetectZeroesUnmap, true, true, false},
		{DetectZeroesUnmap, false, true, true},
	} {
		m := newMem(testSize)
		ts := startServer(t, Config{Exports: []*Export{{Backend: m, DetectZeroes: tc.mode, Trim: tc.trim}}})
		c := ts.connect(clientOpts{})
		c.wantErrno(c.writeAt(0, make([]byte, 8192), 0), 0)
		zf, zeroed := m.lastZero.Load().(ZeroFlags)
		if zeroed != tc.zeroed || (zeroed && zf.NoHole != tc.noHole) {
			t.Errorf("%v trim=%v: zeroed=%v flags %+v", tc.mode, tc.trim, zeroed, zf)
		}
		c.disc()
	}
}

func TestRequestHooks(t *testing.T) {
	hooks := newHookRecorder()
	m := newMem(testSize)
	ts := startServer(t, Config{Exports: []*Export{{Backend: m, Hooks: hooks}}})
	c := ts.connect(clientOpts{})
	c.wantErrno(c.writeAt(0, make([]byte, 1000), 0), 0)
	c.wantErrno(c.read(0, 500, 0), 0)
	c.wantErrno(c.read(testSize, 1, 0), EINVAL)
	c.wantErrno(c.do(Request{Type: 77}, nil), EINVAL) // not reported: no Op
	c.disc()
	waitFor(t, "ConnClosed", func() bool { hooks.mu.Lock(); defer hooks.mu.Unlock(); return hooks.closed == 1 })
	hooks.mu.Lock()
	defer hooks.mu.Unlock()
	if hooks.opened != 1 || hooks.started[OpRead] != 2 || fmt.Sprint(hooks.done[OpRead]) != "[0 22]" ||
		hooks.bytes[OpWrite] != 1000 || hooks.started[OpDisc] != 1 || len(hooks.done) != 3 {
		t.Fatalf("hooks %+v", hooks)
	}
}
