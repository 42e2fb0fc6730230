// Fuzz targets over net.Pipe: arbitrary client bytes during the handshake and during
// transmission must never panic (a recovered panic is logged, and the target fails on that
// log), never hang, and never leak the connection's goroutines.
package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// panicLog records error-level log messages, where serve reports recovered panics.
type panicLog struct {
	mu   sync.Mutex
	msgs []string
}

func (p *panicLog) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (p *panicLog) Handle(_ context.Context, r slog.Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	p.msgs = append(p.msgs, b.String())
	return nil
}
func (p *panicLog) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *panicLog) WithGroup(string) slog.Handler      { return p }

// runSession feeds input to one server connection and waits for it to end.
func runSession(t *testing.T, input []byte) {
	pl := &panicLog{}
	mem := newMem(256 << 10)
	s := &Server{Config: Config{
		Exports: []*Export{
			{Name: "", Backend: mem, Trim: true, MultiConn: true, AllocationDepth: true, DetectZeroes: DetectZeroesUnmap},
			{Name: "ro", Backend: plainBackend{newMem(8192)}, ReadOnly: true, MinBlockSize: 512},
		},
		MaxInFlight:    4,
		HandshakeLimit: 5 * time.Second,
		Logger:         slog.New(pl),
	}}
	if err := s.init(); err != nil {
		t.Fatal(err)
	}
	cl, sv := net.Pipe()
	c := newConn(s, sv)
	s.trackConn(c, true)
	done := make(chan struct{})
	go func() { defer close(done); c.serve() }()
	drained := make(chan struct{})
	go func() { defer close(drained); io.Copy(io.Discard, cl) }()
	cl.SetWriteDeadline(time.Now().Add(5 * time.Second))
	cl.Write(input)
	cl.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("connection did not end")
	}
	<-drained
	pl.mu.Lock()
	defer pl.mu.Unlock()
	if len(pl.msgs) > 0 {
		t.Fatalf("server logged errors: %s", strings.Join(pl.msgs, "\n"))
	}
}

// handshakePrefix builds a client handshake up to GO: mode 0 simple, 1 structured with
// base:allocation, 2 extended with both contexts, 3 EXPORT_NAME.
func handshakePrefix(mode byte) []byte {
	b := writeBuf(nil).u32(uint32(FlagCFixedNewstyle | FlagCNoZeroes))
	opt := func(o Opt, p []byte) {
		b = append(b.u64(MagicIHaveOpt).u32(uint32(o)).u32(uint32(len(p))), p...)
	}
	switch mode % 4 {
	case 1:
		opt(OptStructuredReply, nil)
		opt(OptSetMetaContext, metaPayload("", MetaBaseAllocation))
	case 2:
		opt(OptExtendedHeaders, nil)
		opt(OptSetMetaContext, metaPayload("", MetaBaseAllocation, MetaQemuAllocationDepth))
	case 3:
		opt(OptExportName, nil)
		return b
	}
	opt(OptGo, infoPayload("", InfoBlockSize))
	return b
}

// handshakeSeeds are option streams a real client might send, plus broken ones.
func handshakeSeeds() [][]byte {
	var seeds [][]byte
	for m := range byte(4) {
		seeds = append(seeds, handshakePrefix(m))
	}
	flags := writeBuf(nil).u32(uint32(FlagCFixedNewstyle))
	opt := func(o Opt, p []byte) []byte {
		return append(writeBuf(append([]byte(nil), flags...)).u64(MagicIHaveOpt).u32(uint32(o)).u32(uint32(len(p))), p...)
	}
	seeds = append(seeds,
		opt(OptList, nil),
		opt(OptAbort, nil),
		opt(OptInfo, infoPayload("ro", InfoName, InfoDescription, InfoBlockSize)),
		opt(OptListMetaContext, metaPayload("", "base:", "qemu:")),
		opt(OptStartTLS, nil),
		opt(99, []byte("unknown")),
		opt(OptGo, writeBuf(nil).u32(0xffffffff).u16(0)),
		opt(OptSetMetaContext, writeBuf(nil).u32(0).u32(3).u32(100)),
		writeBuf(nil).u32(0xff),
		writeBuf(nil).u32(0).u64(MagicIHaveOpt).u32(uint32(OptExportName)).u32(2).str("ro"),
	)
	return seeds
}

// transmissionSeeds are request streams, per mode, of every command.
func transmissionSeeds() [][]byte {
	var seeds [][]byte
	for mode := range byte(4) {
		ext := mode == 2
		var b []byte
		add := func(r Request, payload []byte) {
			if ext && payload != nil {
				r.Flags |= CmdFlagPayloadLen
				r.Length = uint64(len(payload))
			} else if r.Type == CmdWrite {
				r.Length = uint64(len(payload))
			}
			b = append(AppendRequest(b, r, ext), payload...)
		}
		add(Request{Type: CmdWrite, Offset: 4096, Cookie: 1}, []byte("0123456789abcdef"))
		add(Request{Type: CmdRead, Offset: 0, Length: 65536, Cookie: 2}, nil)
		add(Request{Type: CmdRead, Offset: 4096, Length: 512, Flags: CmdFlagDF, Cookie: 3}, nil)
		add(Request{Type: CmdFlush, Cookie: 4}, nil)
		add(Request{Type: CmdTrim, Offset: 8192, Length: 8192, Cookie: 5}, nil)
		add(Request{Type: CmdWriteZeroes, Offset: 0, Length: 4096, Flags: CmdFlagNoHole | CmdFlagFUA, Cookie: 6}, nil)
		add(Request{Type: CmdCache, Length: 4096, Cookie: 7}, nil)
		add(Request{Type: CmdBlockStatus, Length: 1 << 18, Flags: CmdFlagReqOne, Cookie: 8}, nil)
		if ext {
			add(Request{Type: CmdBlockStatus, Cookie: 9}, writeBuf(nil).u64(4096).u32(metaIDDepth))
		}
		add(Request{Type: 0xffff, Cookie: 10}, nil)
		add(Request{Type: CmdDisc}, nil)
		seeds = append(seeds, append([]byte{mode}, b...))
	}
	return seeds
}

func FuzzHandshake(f *testing.F) {
	for _, s := range handshakeSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		runSession(t, data)
	})
}

func FuzzTransmission(f *testing.F) {
	for _, s := range transmissionSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		runSession(t, append(handshakePrefix(data[0]), data[1:]...))
	})
}
