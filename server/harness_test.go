// Test harness: a Server on loopback with an in-memory export, goroutine-leak checking, and a
// recorder for hooks.
package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/syncbuf"
)

const testSize = 1 << 20

type testServer struct {
	t    testing.TB
	srv  *Server
	addr string
	mem  *memBackend
	logs *syncbuf.Buffer
	done chan error
}

// startServer serves cfg on 127.0.0.1; with no exports it adds a writable 1 MiB memory export
// named "" with every capability.
func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	checkLeaks(t)
	ts := &testServer{t: t, logs: &syncbuf.Buffer{}, done: make(chan error, 1)}
	if len(cfg.Exports) == 0 {
		ts.mem = newMem(testSize)
		cfg.Exports = []*Export{{Name: "", Description: "test export", Backend: ts.mem,
			Trim: true, MultiConn: true, AllocationDepth: true}}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ts.srv = &Server{Config: cfg}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = ln.Addr().String()
	go func() { ts.done <- ts.srv.Serve(ln) }()
	t.Cleanup(func() {
		ts.srv.Close()
		select {
		case err := <-ts.done:
			if !errors.Is(err, ErrServerClosed) {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after Close")
		}
		if t.Failed() {
			t.Logf("server log:\n%s", ts.logs.String())
		}
	})
	return ts
}

func (ts *testServer) connect(o clientOpts) *tclient {
	ts.t.Helper()
	return connect(ts.t, "tcp", ts.addr, o)
}

// dial opens a raw connection and reads the greeting.
func (ts *testServer) dial() *tclient {
	ts.t.Helper()
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		ts.t.Fatal(err)
	}
	ts.t.Cleanup(func() { nc.Close() })
	return newClient(ts.t, nc)
}

// stillServes checks that a fresh client can complete a handshake and a read.
func (ts *testServer) stillServes() {
	ts.t.Helper()
	c := ts.connect(clientOpts{structured: true})
	r := c.read(0, 512, 0)
	c.wantErrno(r, 0)
	c.disc()
}

// waitConns waits until the server tracks n connections.
func (ts *testServer) waitConns(n int) {
	ts.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for ts.srv.numConns() != n {
		if time.Now().After(deadline) {
			ts.t.Fatalf("server has %d connections, want %d", ts.srv.numConns(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// checkLeaks fails the test if goroutines started during it outlive it.
func checkLeaks(t testing.TB) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Errorf("goroutine leak: %d before, %d after\n%s", before, n, buf)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// hookRecorder records hook calls.
type hookRecorder struct {
	mu         sync.Mutex
	handshakes []string
	opened     int
	closed     int
	started    map[Op]int
	done       map[Op][]uint32
	bytes      map[Op]uint64
}

func newHookRecorder() *hookRecorder {
	return &hookRecorder{started: map[Op]int{}, done: map[Op][]uint32{}, bytes: map[Op]uint64{}}
}

func (h *hookRecorder) Handshake(export string, r HandshakeResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.handshakes = append(h.handshakes, export+":"+r.String())
}
func (h *hookRecorder) ConnOpened() { h.mu.Lock(); h.opened++; h.mu.Unlock() }
func (h *hookRecorder) ConnClosed() { h.mu.Lock(); h.closed++; h.mu.Unlock() }
func (h *hookRecorder) RequestStarted(op Op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.started[op]++
}
func (h *hookRecorder) RequestDone(op Op, n uint64, d time.Duration, errno uint32) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.done[op] = append(h.done[op], errno)
	h.bytes[op] += n
}

func (h *hookRecorder) handshakeLog() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.handshakes, ",")
}

// waitFor polls cond for up to 10 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

var bg = context.Background()
