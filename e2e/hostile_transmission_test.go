// Hostile-client catalog items 17-31 (transmission phase, docs/hostile-clients.md) against the
// built qnbd: each asserts the spec's NBD errno or a hard disconnect, and every write the
// items make legitimately is recorded in the target's model.
package e2e

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/qnbd/qnbd/e2e/libnbd"
	nbd "github.com/qnbd/qnbd/server"
)

// fill is n copies of byte v.
func fill(v byte, n int) []byte { return bytes.Repeat([]byte{v}, n) }

func hostileTransmissionItems(t *testing.T, a, b, ro *hostileTarget) {
	item(t, "17-request-magic", func(t *testing.T) {
		for _, tg := range []*hostileTarget{a, b} {
			for _, mode := range []wireMode{wireSimple, wireStructured, wireExtended} {
				c := tg.session(t, mode)
				h := nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdRead, Cookie: 9, Length: 512}, mode == wireExtended)
				h[0] ^= 0xff
				c.write(h)
				if mode == wireExtended {
					wantClosedSilently(t, c, "bad request magic")
					continue
				}
				// qemu-nbd 7.2 answers EINVAL to the header's cookie, then closes.
				c.pending[9] = []nbd.Request{{Type: nbd.CmdRead, Cookie: 9, Length: 512}}
				c.wantErrno(c.recv(), nbd.EINVAL)
				wantClosedSilently(t, c, "bad request magic")
			}
		}
		// The other header style is a bad magic too.
		c := a.session(t, wireExtended)
		c.write(append(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdRead, Length: 512}, false), 0, 0, 0, 0))
		wantClosedSilently(t, c, "compact request after EXTENDED_HEADERS")
		// Without them, an extended header's first 28 bytes are a compact header with a bad
		// magic: EINVAL to its cookie, then a close, as qemu-nbd 7.2 does.
		c = a.session(t, wireStructured)
		c.write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdRead, Cookie: 5, Length: 512}, true))
		c.pending[5] = []nbd.Request{{Type: nbd.CmdRead, Cookie: 5}}
		c.wantErrno(c.recv(), nbd.EINVAL)
		wantClosedSilently(t, c, "extended request without EXTENDED_HEADERS")
	}, a, b)

	item(t, "18-unknown-command", func(t *testing.T) {
		for _, mode := range []wireMode{wireSimple, wireStructured, wireExtended} {
			c := a.session(t, mode)
			for _, typ := range []nbd.Cmd{0xffff, nbd.CmdResize, 9, 0x100} {
				c.wantErrno(c.cmd(typ, 1, 1, 0), nbd.EINVAL)
			}
			a.wantModel(t, c, 0, 64<<10)
			c.disc()
		}
	}, a)

	item(t, "19-bad-flags", func(t *testing.T) {
		c := a.session(t, wireStructured, nbd.MetaBaseAllocation)
		c.wantErrno(c.read(0, 512, 0xffff), nbd.EINVAL)
		c.wantErrno(c.read(0, 512, nbd.CmdFlagFastZero), nbd.EINVAL)
		c.wantErrno(c.read(0, 512, nbd.CmdFlagReqOne), nbd.EINVAL)
		c.wantErrno(c.read(0, 512, 1<<15), nbd.EINVAL)
		c.wantErrno(c.cmd(nbd.CmdTrim, uint64(a.scratch), 512, nbd.CmdFlagDF), nbd.EINVAL)
		c.wantErrno(c.cmd(nbd.CmdWriteZeroes, uint64(a.scratch), 512, nbd.CmdFlagDF), nbd.EINVAL)
		c.wantErrno(c.cmd(nbd.CmdBlockStatus, 0, 512, nbd.CmdFlagDF), nbd.EINVAL)
		c.wantErrno(c.cmd(nbd.CmdCache, 0, 512, nbd.CmdFlagNoHole), nbd.EINVAL)
		c.wantErrno(c.cmd(nbd.CmdFlush, 0, 0, nbd.CmdFlagReqOne), nbd.EINVAL)
		// A WRITE with a flag it does not take: refused, its payload consumed, not written.
		c.wantErrno(c.writeAt(uint64(a.scratch), fill(0xee, 4096), nbd.CmdFlagNoHole), nbd.EINVAL)
		c.wantErrno(c.writeAt(uint64(a.scratch), fill(0xee, 4096), nbd.CmdFlagPayloadLen), nbd.EINVAL)
		a.watch(a.scratch, 4096)
		// FUA is valid on every command; DF on READ.
		c.wantErrno(c.cmd(nbd.CmdFlush, 0, 0, nbd.CmdFlagFUA), 0)
		r := c.read(8<<20, 256<<10, nbd.CmdFlagDF|nbd.CmdFlagFUA)
		c.wantErrno(r, 0)
		if len(r.chunks) != 1 || r.chunks[0].typ != nbd.ReplyTypeOffsetData {
			t.Errorf("DF read answered with %d chunks", len(r.chunks))
		}
		requireBytes(t, "DF read", 8<<20, r.data, a.model[8<<20:8<<20+256<<10])
		a.wantModel(t, c, a.scratch, 4096)
		c.disc()
	}, a)

	item(t, "20-offsets", func(t *testing.T) {
		size := uint64(hostileSize)
		// Extended headers carry 64-bit lengths: offset 2^64-1, and offset+length wrapping.
		c := a.session(t, wireExtended, nbd.MetaBaseAllocation)
		for _, typ := range []nbd.Cmd{nbd.CmdRead, nbd.CmdWrite, nbd.CmdTrim, nbd.CmdCache,
			nbd.CmdWriteZeroes, nbd.CmdBlockStatus} {
			want := nbd.EINVAL // writes too, as qemu-nbd 7.2 answers
			if typ == nbd.CmdWrite {
				c.wantErrno(c.writeAt(^uint64(0), fill(0xee, 16), 0), want)
				c.wantErrno(c.writeAt(^uint64(0)-7, fill(0xee, 16), 0), want)
				c.wantErrno(c.writeAt(size-1, fill(0xee, 2), 0), want)
				continue
			}
			c.wantErrno(c.cmd(typ, ^uint64(0), 16, 0), want)
			c.wantErrno(c.cmd(typ, 1<<63, 1<<63+16, 0), want)
			c.wantErrno(c.cmd(typ, size-1, 2, 0), want)
			c.wantErrno(c.cmd(typ, size+1, 0, 0), want)
		}
		a.watch(hostileSize-4096, 4096)
		c.disc()
		// Compact headers: a 32-bit length wrapping past 2^64; then length 0 for every command,
		// at 0 and at the end: harmless, except BLOCK_STATUS, which cannot describe nothing.
		c = a.session(t, wireStructured, nbd.MetaBaseAllocation)
		c.wantErrno(c.read(^uint64(0)-4095, 8192, 0), nbd.EINVAL)
		c.wantErrno(c.writeAt(^uint64(0)-4095, fill(0xee, 8192), 0), nbd.EINVAL)
		c.wantErrno(c.cmd(nbd.CmdTrim, ^uint64(0)-4095, 8192, 0), nbd.EINVAL)
		c.wantErrno(c.cmd(nbd.CmdWriteZeroes, ^uint64(0)-4095, 8192, 0), nbd.EINVAL)
		for _, off := range []uint64{0, size} {
			for _, typ := range []nbd.Cmd{nbd.CmdRead, nbd.CmdWrite, nbd.CmdTrim, nbd.CmdCache,
				nbd.CmdWriteZeroes, nbd.CmdBlockStatus} {
				want := nbd.Errno(0)
				if typ == nbd.CmdBlockStatus {
					want = nbd.EINVAL
				}
				c.wantErrno(c.cmd(typ, off, 0, 0), want)
			}
		}
		a.wantModel(t, c, 0, 4096)
		c.disc()
	}, a)

	item(t, "21-oversize-lengths", func(t *testing.T) {
		c := a.session(t, wireStructured)
		c.wantErrno(c.read(0, nbd.MaxPayload+1, 0), nbd.EINVAL)
		c.wantErrno(c.read(0, 0xffffffff, 0), nbd.EINVAL)
		c.wantErrno(c.read(0, nbd.MaxPayload+1, nbd.CmdFlagDF), nbd.EINVAL) // qemu-nbd's
		c.wantErrno(c.cmd(nbd.CmdCache, 0, nbd.MaxPayload+1, 0), nbd.EINVAL)
		// A payload of the maximum is no attack: a 32 MiB READ is served.
		a.wantModel(t, c, 0, nbd.MaxPayload)
		// Effect lengths may exceed the maximum payload: zero, then trim, [11 MiB, 44 MiB).
		const zOff, zLen = 11 << 20, 33 << 20
		c.wantErrno(c.cmd(nbd.CmdWriteZeroes, zOff, zLen, 0), 0)
		a.zero(zOff, zLen)
		c.wantErrno(c.cmd(nbd.CmdTrim, zOff, zLen, 0), 0)
		// WRITE over the maximum: EINVAL, then a disconnect without reading the payload, as
		// qemu-nbd does, whatever the length; nothing is written.
		for i, n := range []uint64{nbd.MaxPayload + 1, 2*nbd.MaxPayload + 1, 0xffffffff} {
			if i > 0 {
				c = a.session(t, []wireMode{wireSimple, wireStructured}[i%2])
			}
			c.send(nbd.Request{Type: nbd.CmdWrite, Cookie: 77, Offset: uint64(a.scratch), Length: n}, nil)
			start := time.Now()
			c.wantErrno(c.recv(), nbd.EINVAL)
			wantClosedSilently(t, c, fmt.Sprintf("WRITE of %d bytes", n))
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("oversize WRITE: disconnect after %v", d)
			}
		}
		a.watch(a.scratch, 64<<10)
		c = a.session(t, wireStructured)
		a.wantModel(t, c, a.scratch, 64<<10)
		c.disc()
		// Extended headers: any command with a payload length over the maximum, the same.
		c = a.session(t, wireExtended)
		c.wantErrno(c.read(0, 1<<40, 0), nbd.EINVAL)
		c.send(nbd.Request{Type: nbd.CmdFlush, Cookie: 78, Flags: nbd.CmdFlagPayloadLen, Length: 1 << 40}, nil)
		c.wantErrno(c.recv(), nbd.EINVAL)
		wantClosedSilently(t, c, "extended FLUSH with a 1 TiB payload")
	}, a)

	item(t, "22-block-size", func(t *testing.T) {
		// qnbd advertises a minimum block size of 1 (as qemu-nbd does for qcow2): requests at
		// any byte offset are valid and exact.
		c := a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle | nbd.FlagCNoZeroes)
		c.wantRep(c.opt(nbd.OptStructuredReply, nil), nbd.RepAck)
		c.mode = wireStructured
		bs := infos(c.enter(""))[nbd.InfoBlockSize]
		if len(bs) != 12 || wbe.Uint32(bs) != 1 || wbe.Uint32(bs[4:]) != 4096 || wbe.Uint32(bs[8:]) != nbd.MaxPayload {
			t.Fatalf("NBD_INFO_BLOCK_SIZE %x, want 1/4096/32 MiB", bs)
		}
		odd := a.scratch + hostileCluster - 1 // across a cluster boundary
		p := []byte{0x11, 0x22, 0x33}
		c.wantErrno(c.writeAt(uint64(odd), p, 0), 0)
		a.put(odd, p)
		zoff := int64(8<<20 + 777 + 100001) // inside stamped data
		c.wantErrno(c.cmd(nbd.CmdWriteZeroes, uint64(zoff), 5, nbd.CmdFlagNoHole), 0)
		a.zero(zoff, 5)
		c.wantErrno(c.cmd(nbd.CmdTrim, 2<<20+1, 100, 0), 0) // a hole stays zeros
		for _, w := range [][2]int64{{odd - 1, 5}, {zoff - 3, 11}, {1, 1}, {3<<20 - 101, 3}, {5<<20 + 7, 77}} {
			a.wantModel(t, c, w[0], w[1])
		}
		c.disc()
		h := connect(t, a.srv, a.export, nil)
		if n, err := h.GetBlockSize(libnbd.SizeMinimum); err != nil || n != 1 {
			t.Errorf("libnbd minimum block size %d, %v", n, err)
		}
	}, a)

	item(t, "23-read-only", func(t *testing.T) {
		for _, mode := range []wireMode{wireSimple, wireStructured} {
			c := ro.session(t, mode)
			if c.tflags&nbd.FlagReadOnly == 0 {
				t.Fatalf("read-only export advertises %v", c.tflags)
			}
			// EINVAL, as qemu-nbd 7.2 answers.
			c.wantErrno(c.writeAt(0, fill(0xee, 4096), 0), nbd.EINVAL)
			c.wantErrno(c.writeAt(4<<20, fill(0xee, 4096), 0), nbd.EINVAL) // past the end too
			c.wantErrno(c.cmd(nbd.CmdTrim, 0, 4096, 0), nbd.EINVAL)
			c.wantErrno(c.cmd(nbd.CmdWriteZeroes, 0, 4096, 0), nbd.EINVAL)
			c.wantErrno(c.cmd(nbd.CmdWriteZeroes, 0, 4096, nbd.CmdFlagNoHole), nbd.EINVAL)
			c.wantErrno(c.cmd(nbd.CmdFlush, 0, 0, 0), 0)
			c.wantErrno(c.cmd(nbd.CmdCache, 0, 4096, 0), 0)
			ro.wantModel(t, c, 0, 64<<10)
			c.disc()
		}
	}, a, ro)

	item(t, "24-flush-fields", func(t *testing.T) {
		for _, mode := range []wireMode{wireSimple, wireExtended} {
			c := a.session(t, mode)
			// Inside the export the fields are ignored, as qemu-nbd ignores them; past its
			// end they are out of range.
			c.wantErrno(c.cmd(nbd.CmdFlush, 4096, 0, 0), 0)
			c.wantErrno(c.cmd(nbd.CmdFlush, 0, 4096, 0), 0)
			c.wantErrno(c.cmd(nbd.CmdFlush, ^uint64(0), 0xffffffff, 0), nbd.EINVAL)
			c.wantErrno(c.cmd(nbd.CmdFlush, 0, 0, 0), 0)
			c.disc()
		}
	}, a)

	item(t, "25-df-and-status-unnegotiated", func(t *testing.T) {
		c := a.session(t, wireSimple)
		if c.tflags&nbd.FlagSendDF != 0 {
			t.Errorf("SEND_DF advertised without structured replies")
		}
		c.wantErrno(c.read(0, 512, nbd.CmdFlagDF), nbd.EINVAL)
		c.wantErrno(c.cmd(nbd.CmdBlockStatus, 0, 512, 0), nbd.EINVAL)
		a.wantModel(t, c, 0, 512)
		c.disc()
		c = a.session(t, wireStructured)
		c.wantErrno(c.cmd(nbd.CmdBlockStatus, 0, 512, 0), nbd.EINVAL)
		c.disc()
		// Contexts chosen for another export do not carry over to GO on this one.
		c = a.dial(t)
		c.sendFlags(nbd.FlagCFixedNewstyle)
		c.wantRep(c.opt(nbd.OptStructuredReply, nil), nbd.RepAck)
		c.mode = wireStructured
		c.wantRep(c.opt(nbd.OptSetMetaContext, metaPayload("ro", nbd.MetaBaseAllocation)), nbd.RepAck)
		c.enter("")
		c.wantErrno(c.cmd(nbd.CmdBlockStatus, 0, 512, 0), nbd.EINVAL)
		c.disc()
	}, a)

	item(t, "26-cookie-reuse", func(t *testing.T) {
		for _, mode := range []wireMode{wireSimple, wireStructured} {
			c := a.session(t, mode)
			req := nbd.Request{Type: nbd.CmdRead, Offset: 8 << 20, Length: 128 << 10, Cookie: 42}
			c.send(req, nil)
			c.send(req, nil)
			for range 2 {
				r := c.recv()
				if r.cookie != 42 || r.errno != 0 {
					t.Fatalf("reply %v", r)
				}
				requireBytes(t, "read with a reused cookie", 8<<20, r.data, a.model[8<<20:8<<20+128<<10])
			}
			// Two WRITEs with one cookie, to different places: both done, both answered.
			off := a.scratch + 1<<20 + int64(mode)*128<<10
			p, q := stamp(26, off, 4096), stamp(27, off+64<<10, 4096)
			w := nbd.Request{Type: nbd.CmdWrite, Offset: uint64(off), Length: 4096, Cookie: 7}
			c.send(w, p)
			w.Offset += 64 << 10
			c.send(w, q)
			for range 2 {
				if r := c.recv(); r.cookie != 7 || r.errno != 0 {
					t.Fatalf("write reply %v", r)
				}
			}
			a.put(off, p)
			a.put(off+64<<10, q)
			c.disc()
		}
	}, a)

	item(t, "27-pipeline-without-reading", func(t *testing.T) {
		pipelineReads(t, a, 1<<20, 1000)
		pipelineReads(t, a, nbd.MaxPayload, 1000)
		// Pipelined WRITEs (rewriting what is there, so any number of them is deterministic),
		// replies read only after all were sent.
		c := a.session(t, wireSimple)
		const n, off, size = 64, 8<<20 + 777, 1 << 20
		var buf []byte
		for i := range n {
			buf = nbd.AppendRequest(buf, nbd.Request{Type: nbd.CmdWrite, Offset: off, Length: size, Cookie: uint64(i)}, false)
			buf = append(buf, a.model[off:off+size]...)
			c.pending[uint64(i)] = []nbd.Request{{Type: nbd.CmdWrite, Offset: off, Length: size}}
		}
		c.write(buf)
		requireRSS(t, a.srv, "64 pipelined 1 MiB WRITEs")
		for range n {
			if r := c.recv(); r.errno != 0 {
				t.Fatalf("pipelined write: %v", r)
			}
		}
		a.watch(off, size)
		c.disc()
	}, a)

	item(t, "28-cut-mid-request", func(t *testing.T) {
		for _, tg := range []*hostileTarget{a, b} {
			for mode := range wireExtended + 1 {
				off := tg.scratch + 2<<20 + int64(mode)*64<<10
				req := nbd.Request{Type: nbd.CmdWrite, Offset: uint64(off), Length: 4096, Cookie: 1}
				if mode == wireExtended {
					req.Flags = nbd.CmdFlagPayloadLen
				}
				full := append(nbd.AppendRequest(nil, req, mode == wireExtended), fill(0xee, 4096)...)
				hdr := len(full) - 4096
				var cuts []int
				for i := 1; i <= hdr; i++ {
					cuts = append(cuts, i)
				}
				for i := hdr + 512; i < len(full); i += 512 {
					cuts = append(cuts, i)
				}
				cuts = append(cuts, len(full)-1)
				for _, cut := range cuts {
					c := tg.session(t, mode)
					c.write(full[:cut])
					if cut%2 == 0 {
						c.reset()
					} else {
						c.closeWrite()
						wantClosedSilently(t, c, "cut request")
						c.close()
					}
				}
				tg.watch(off, 4096)
			}
		}
	}, a, b)

	item(t, "29-disc-with-inflight", func(t *testing.T) {
		c := a.session(t, wireStructured)
		off := a.scratch + 5<<20
		var writes [][]byte
		var buf []byte
		for i := range 3 {
			p := stamp(29, off+int64(i)<<20, 1<<20)
			writes = append(writes, p)
			r := nbd.Request{Type: nbd.CmdWrite, Offset: uint64(off + int64(i)<<20), Length: 1 << 20, Cookie: uint64(i + 1)}
			c.pending[r.Cookie] = []nbd.Request{r}
			buf = append(nbd.AppendRequest(buf, r, false), p...)
		}
		buf = nbd.AppendRequest(buf, nbd.Request{Type: nbd.CmdDisc}, false)
		// After DISC: a WRITE that must be ignored.
		late := a.scratch + 3<<20
		buf = append(nbd.AppendRequest(buf, nbd.Request{Type: nbd.CmdWrite, Offset: uint64(late), Length: 4, Cookie: 99}, false), 9, 9, 9, 9)
		c.write(buf)
		for range 3 {
			if r := c.recv(); r.errno != 0 {
				t.Fatalf("write in flight at DISC: %v", r)
			}
		}
		wantClosedSilently(t, c, "after DISC")
		for i, p := range writes {
			a.put(off+int64(i)<<20, p)
		}
		a.watch(late, 4096)
	}, a)

	item(t, "30-half-close", func(t *testing.T) {
		for _, tg := range []*hostileTarget{a, b} {
			c := tg.session(t, wireSimple)
			off := tg.scratch + 2<<20 + 512<<10 + 1
			old := append([]byte(nil), tg.model[off:off+5]...)
			c.send(nbd.Request{Type: nbd.CmdWrite, Offset: uint64(off), Length: 5, Cookie: 1}, []byte("hello"))
			c.send(nbd.Request{Type: nbd.CmdRead, Offset: uint64(off), Length: 5, Cookie: 2}, nil)
			c.closeWrite()
			for range 2 {
				r := c.recv()
				if r.errno != 0 {
					t.Fatalf("after half-close: %v", r)
				}
				// The READ may run before or after the WRITE (no ordering between requests in
				// flight), never in between.
				if r.req.Type == nbd.CmdRead && string(r.data) != "hello" && !bytes.Equal(r.data, old) {
					t.Fatalf("read %q during a write of %q over %q", r.data, "hello", old)
				}
			}
			wantClosedSilently(t, c, "half-closed client")
			tg.put(off, []byte("hello"))
		}
	}, a, b)

	item(t, "31-killed-client", func(t *testing.T) {
		c := a.session(t, wireStructured)
		off := a.scratch + 4<<20
		acked := stamp(31, off, 8192)
		c.wantErrno(c.writeAt(uint64(off), acked, nbd.CmdFlagFUA), 0)
		a.put(off, acked)
		var buf []byte
		for i := range 4 {
			o := off + int64(i+1)<<16
			buf = append(nbd.AppendRequest(buf, nbd.Request{Type: nbd.CmdWrite, Offset: uint64(o), Length: 64 << 10, Cookie: uint64(i + 10)}, false),
				stamp(32, o, 64<<10)...)
		}
		c.write(buf[:len(buf)-1000]) // the last write's payload is cut
		c.reset()
		// Once the server is done with that client (its last worker returned), reconnect:
		// the acknowledged write is there; each unacknowledged one fully there or not at all.
		a.waitQuiet(t)
		c = a.session(t, wireStructured)
		a.wantModel(t, c, off, 8192)
		for i := range 4 {
			o := off + int64(i+1)<<16
			r := c.read(uint64(o), 64<<10, 0)
			c.wantErrno(r, 0)
			if !bytes.Equal(r.data, stamp(32, o, 64<<10)) && !bytes.Equal(r.data, a.model[o:o+64<<10]) {
				t.Errorf("unacknowledged write %d is torn", i)
			}
			if i == 3 && !bytes.Equal(r.data, a.model[o:o+64<<10]) {
				t.Errorf("a write whose payload was cut reached the image")
			}
		}
		// Make the end state deterministic again.
		c.wantErrno(c.cmd(nbd.CmdWriteZeroes, uint64(off+64<<10), 4*64<<10, 0), 0)
		a.zero(off+64<<10, 4*64<<10)
		c.disc()
	}, a)
}

// pipelineReads sends count READs of length bytes on one connection without reading a
// reply, until the server stops reading (backpressure), checks the server's RSS, and drops
// the connection.
func pipelineReads(t *testing.T, a *hostileTarget, length uint64, count int) {
	t.Helper()
	c := a.session(t, wireStructured)
	var batch []byte
	for range 1000 {
		batch = nbd.AppendRequest(batch, nbd.Request{Type: nbd.CmdRead, Length: length, Cookie: 1}, false)
	}
	sent := 0
	c.nc.SetWriteDeadline(time.Now().Add(2 * time.Second))
	for ; sent < count; sent++ {
		if _, err := c.nc.Write(batch); err != nil {
			break
		}
	}
	t.Logf("%d KiB READs: %d of %d batches of 1000 accepted before the server stopped reading", length>>10, sent, count)
	if sent == count {
		t.Errorf("all %d READs of %d bytes accepted without reading a reply: no backpressure", count*1000, length)
	}
	requireRSS(t, a.srv, "pipelined READs nobody reads")
	c.reset()
}
