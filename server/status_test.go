// Block status, extended headers with 64-bit lengths and payloads, and multi-conn FLUSH.
package server

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
)

func TestBlockStatus(t *testing.T) {
	for _, m := range modes[1:] {
		t.Run(m.name, func(t *testing.T) {
			ts := startServer(t, Config{})
			c := ts.connect(m.o)
			c.wantErrno(c.writeAt(2*memBlock, make([]byte, 2*memBlock), 0), 0)
			r := c.do(Request{Type: CmdBlockStatus, Offset: memBlock, Length: 4 * memBlock}, nil)
			c.wantErrno(r, 0)
			hz := StateHole | StateZero
			want := []Extent{{memBlock, hz}, {2 * memBlock, 0}, {memBlock, hz}}
			if got := r.status[metaIDBase]; fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("base:allocation %v, want %v", got, want)
			}
			wantDepth := []Extent{{memBlock, 0}, {2 * memBlock, 1}, {memBlock, 0}}
			if got := r.status[metaIDDepth]; fmt.Sprint(got) != fmt.Sprint(wantDepth) {
				t.Errorf("allocation-depth %v, want %v", got, wantDepth)
			}
			if len(r.chunks) != 2 || r.chunks[1].flags&ReplyFlagDone == 0 || r.chunks[0].flags&ReplyFlagDone != 0 {
				t.Errorf("chunks %+v", r.chunks)
			}
			// REQ_ONE: one extent per context, within the request.
			r = c.do(Request{Type: CmdBlockStatus, Flags: CmdFlagReqOne, Offset: 2 * memBlock, Length: 100}, nil)
			for id, ex := range r.status {
				if len(ex) != 1 || ex[0].Length != 100 {
					t.Errorf("REQ_ONE context %d: %v", id, ex)
				}
			}
			// Errors from the backend become an error chunk.
			ts.mem.failStatus.Store(syscall.EIO)
			c.wantErrno(c.do(Request{Type: CmdBlockStatus, Length: 512}, nil), EIO)
			ts.mem.failStatus.Store(nil)
			c.disc()
		})
	}
}

func TestBlockStatusWithoutContext(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.connect(clientOpts{structured: true})
	c.wantErrno(c.do(Request{Type: CmdBlockStatus, Length: 512}, nil), EINVAL)
	c.disc()
	// Contexts set for another export do not carry over to GO.
	c = ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
	c.mode = modeStructured
	c.wantRep(c.opt(OptSetMetaContext, metaPayload("", MetaBaseAllocation)), RepAck)
	c.wantRep(c.opt(OptSetMetaContext, metaPayload("", "x-none:")), RepAck) // replaces with nothing
	c.wantRep(c.opt(OptGo, infoPayload("")), RepAck)
	c.wantErrno(c.do(Request{Type: CmdBlockStatus, Length: 512}, nil), EINVAL)
	c.disc()
}

// bigBackend is a 16 GiB export of zeros, for 64-bit effect lengths.
type bigBackend struct{}

func (bigBackend) Size() uint64                                       { return 16 << 30 }
func (bigBackend) ReadAt(_ context.Context, p []byte, _ uint64) error { clear(p); return nil }
func (bigBackend) WriteAt(context.Context, []byte, uint64, bool) error {
	return nil
}
func (bigBackend) Flush(context.Context) error                      { return nil }
func (bigBackend) Trim(context.Context, uint64, uint64, bool) error { return nil }
func (bigBackend) WriteZeroes(context.Context, uint64, uint64, ZeroFlags) error {
	return nil
}
func (bigBackend) Allocation(_ context.Context, off, n uint64) ([]Extent, error) {
	return []Extent{{Length: n, Flags: StateHole | StateZero}}, nil
}

func TestExtendedHeaders64Bit(t *testing.T) {
	ts := startServer(t, Config{Exports: []*Export{{Backend: bigBackend{}, Trim: true}}})
	c := ts.connect(clientOpts{extended: true, metas: []string{MetaBaseAllocation}})
	if c.flags&FlagBlockStatusPayload == 0 {
		t.Errorf("flags %v lack BLOCK_STATUS_PAYLOAD", c.flags)
	}
	big := uint64(10 << 30)
	r := c.do(Request{Type: CmdBlockStatus, Offset: 1 << 30, Length: big}, nil)
	c.wantErrno(r, 0)
	if r.chunks[0].typ != ReplyTypeBlockStatusExt {
		t.Fatalf("chunk %v", r.chunks[0].typ)
	}
	if got := r.status[metaIDBase]; len(got) != 1 || got[0].Length != big {
		t.Fatalf("64-bit extent %v", got)
	}
	c.wantErrno(c.do(Request{Type: CmdTrim, Length: big}, nil), 0)
	c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Offset: 1, Length: big}, nil), 0)
	c.wantErrno(c.do(Request{Type: CmdWriteZeroes, Offset: 8 << 30, Length: big}, nil), EINVAL)
	// A read longer than the maximum payload is refused rather than split.
	c.wantErrno(c.read(0, big, 0), EINVAL)
	// A hole read answers with OFFSET_HOLE in an extended chunk.
	r = c.read(4096, 65536, 0)
	if r.holes != 1 || r.chunks[0].offset != 4096 {
		t.Fatalf("hole read %+v", r.chunks)
	}
	c.disc()
}

func TestExtendedPayloadRules(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.connect(clientOpts{extended: true, metas: []string{MetaBaseAllocation, MetaQemuAllocationDepth}})
	// WRITE without PAYLOAD_LEN: no payload follows; EINVAL.
	c.wantErrno(c.do(Request{Type: CmdWrite, Length: 512}, nil), EINVAL)
	// A payload on a command that takes none is consumed, then EINVAL.
	// (send sets NBD_CMD_FLAG_PAYLOAD_LEN and the length from the payload.)
	c.wantErrno(c.do(Request{Type: CmdFlush}, []byte("12345")), EINVAL)
	c.wantErrno(c.do(Request{Type: CmdRead, Length: 512}, []byte("123")), EINVAL)
	c.wantErrno(c.do(Request{Type: CmdTrim, Length: 512}, make([]byte, 70000)), EINVAL)
	// BLOCK_STATUS payload: effect length then the ids to report.
	p := writeBuf(nil).u64(8192).u32(metaIDDepth)
	r := c.do(Request{Type: CmdBlockStatus}, p)
	c.wantErrno(r, 0)
	if len(r.status) != 1 || len(r.status[metaIDDepth]) == 0 {
		t.Fatalf("status %v", r.status)
	}
	for _, bad := range [][]byte{
		writeBuf(nil).u64(8192).u32(99),                         // unknown id
		writeBuf(nil).u64(8192).u32(metaIDBase).u32(metaIDBase), // repeated
		writeBuf(nil).u32(1),                                    // short
		writeBuf(nil).u64(8192).u32(1).u32(2).u32(3),            // more ids than contexts
		writeBuf(nil).u64(testSize + 1).u32(metaIDBase),         // beyond the end
	} {
		c.wantErrno(c.do(Request{Type: CmdBlockStatus}, bad), EINVAL)
	}
	c.wantErrno(c.read(0, 16, 0), 0)
	c.disc()
}

// durableBackend is a memBackend whose Flush copies the data to a "durable" image, so a test
// can see what a crash right after a FLUSH reply would keep.
type durableBackend struct {
	*memBackend
	mu      sync.Mutex
	durable []byte
}

func (d *durableBackend) Flush(ctx context.Context) error {
	data, _ := d.snapshot()
	d.mu.Lock()
	d.durable = data
	d.mu.Unlock()
	return d.memBackend.Flush(ctx)
}

func (d *durableBackend) WriteAt(ctx context.Context, p []byte, off uint64, fua bool) error {
	if err := d.memBackend.WriteAt(ctx, p, off, fua); err != nil {
		return err
	}
	if fua {
		d.mu.Lock()
		copy(d.durable[off:], p)
		d.mu.Unlock()
	}
	return nil
}

// With NBD_FLAG_CAN_MULTI_CONN, a FLUSH on one connection covers writes already replied to
// on another.
func TestMultiConnFlush(t *testing.T) {
	d := &durableBackend{memBackend: newMem(testSize), durable: make([]byte, testSize)}
	ts := startServer(t, Config{Exports: []*Export{{Backend: d, MultiConn: true}}})
	a := ts.connect(clientOpts{structured: true})
	b := ts.connect(clientOpts{extended: true})
	if a.flags&FlagCanMultiConn == 0 || b.flags&FlagCanMultiConn == 0 {
		t.Fatalf("CAN_MULTI_CONN not advertised")
	}
	pa, pb := pattern(4096, 21), pattern(4096, 22)
	a.wantErrno(a.writeAt(0, pa, 0), 0)
	b.wantErrno(b.writeAt(8192, pb, CmdFlagFUA), 0)
	d.mu.Lock()
	if !bytes.Equal(d.durable[8192:12288], pb) || bytes.Equal(d.durable[:4096], pa) {
		t.Fatalf("FUA write not durable, or unflushed write already durable")
	}
	d.mu.Unlock()
	b.wantErrno(b.do(Request{Type: CmdFlush}, nil), 0)
	d.mu.Lock()
	if !bytes.Equal(d.durable[:4096], pa) {
		t.Fatalf("FLUSH on one connection did not cover a write replied to on the other")
	}
	d.mu.Unlock()
	a.disc()
	b.disc()
}
