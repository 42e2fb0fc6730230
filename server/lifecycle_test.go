// Lifecycle tests: Shutdown (idle, in flight, in the handshake, on timeout), Close, panics,
// accept backoff, ConnState, and serving several listeners.
package server

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestShutdownIdle(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.connect(clientOpts{structured: true})
	c.wantErrno(c.read(0, 512, 0), 0)
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c.expectClosed()
	if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	ts.done <- ErrServerClosed // for the cleanup
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	if err := ts.srv.Serve(ln); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

func TestShutdownFinishesInflightAndRefusesNew(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			ts := startServer(t, Config{})
			c := ts.connect(m.o)
			c.wantErrno(c.writeAt(0, pattern(4096, 1), 0), 0)
			for len(ts.mem.entered) > 0 {
				<-ts.mem.entered
			}
			gate := ts.mem.hold()
			slow := c.send(Request{Type: CmdWrite, Offset: 8192}, []byte("in flight"))
			<-ts.mem.entered
			res := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(bg, 10*time.Second)
				defer cancel()
				res <- ts.srv.Shutdown(ctx)
			}()
			waitFor(t, "shutdown to reach the connection", func() bool {
				ts.srv.mu.Lock()
				defer ts.srv.mu.Unlock()
				for sc := range ts.srv.conns {
					sc.mu.Lock()
					s := sc.shutting
					sc.mu.Unlock()
					if !s {
						return false
					}
				}
				return true
			})
			late := c.send(Request{Type: CmdRead, Length: 512}, nil)
			r := c.recv()
			if r.cookie != late || r.errno != ESHUTDOWN {
				t.Fatalf("late request: cookie %d errno %v", r.cookie, r.errno)
			}
			ts.mem.unhold(gate)
			r = c.recv()
			if r.cookie != slow || r.errno != 0 {
				t.Fatalf("in-flight request: cookie %d errno %v", r.cookie, r.errno)
			}
			c.expectClosed()
			if err := <-res; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if data, _ := ts.mem.snapshot(); string(data[8192:8201]) != "in flight" {
				t.Fatalf("in-flight write lost")
			}
		})
	}
}

func TestShutdownDuringHandshake(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptStructuredReply, nil), RepAck)
	ctx, cancel := context.WithTimeout(bg, 10*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c.expectClosed()
}

// TestOptionsDuringShutdown drives a connection whose server is already shutting down.
func TestOptionsDuringShutdown(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		opt  Opt
		want Rep
	}{{OptList, RepErrShutdown}, {OptGo, RepErrShutdown}, {OptAbort, RepAck}} {
		s := &Server{Config: Config{Exports: []*Export{{Backend: newMem(4096)}}}}
		if err := s.init(); err != nil {
			t.Fatal(err)
		}
		cl, sv := net.Pipe()
		c := newConn(s, sv)
		done := make(chan struct{})
		go func() { defer close(done); c.serve() }()
		tc2 := newClient(t, cl)
		tc2.sendFlags(FlagCFixedNewstyle)
		// Shutdown begins while the server waits for the next option (without the
		// read-deadline wake-up, so that the option still arrives).
		s.inShutdown.Store(true)
		var p []byte
		if tc.opt == OptGo {
			p = infoPayload("")
		}
		tc2.wantRep(tc2.opt(tc.opt, p), tc.want)
		tc2.expectClosed()
		cl.Close()
		<-done
	}
}

func TestShutdownTimeout(t *testing.T) {
	ts := startServer(t, Config{})
	c := ts.connect(clientOpts{})
	gate := ts.mem.hold()
	defer ts.mem.unhold(gate)
	c.send(Request{Type: CmdWrite}, []byte("stuck"))
	<-ts.mem.entered
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	c.expectClosed()
}

func TestCloseDropsConnections(t *testing.T) {
	ts := startServer(t, Config{})
	a := ts.connect(clientOpts{})
	b := ts.dial()
	ts.srv.Close()
	a.expectClosed()
	b.expectClosed()
}

func TestPanicClosesOnlyThatConnection(t *testing.T) {
	m := newMem(testSize)
	ts := startServer(t, Config{Exports: []*Export{{Backend: panicBackend{m}}}})
	other := ts.connect(clientOpts{})
	c := ts.connect(clientOpts{})
	c.send(Request{Type: CmdRead, Length: 512}, nil)
	c.expectClosed()
	if !strings.Contains(ts.logs.String(), "test panic in backend") ||
		!strings.Contains(ts.logs.String(), "goroutine") {
		t.Errorf("panic not logged with its stack:\n%s", ts.logs.String())
	}
	other.wantErrno(other.read(512, 512, 0), 0)
	other.disc()
}

// flakyListener fails Accept with temporary errors before handing out real connections.
type flakyListener struct {
	net.Listener
	mu       sync.Mutex
	failures []error
}

type tempErr struct{}

func (tempErr) Error() string { return "temporary" }
func (tempErr) Timeout() bool { return true }

// Temporary is part of net.Error, though deprecated.
func (tempErr) Temporary() bool { return true }

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.failures) > 0 {
		err := l.failures[0]
		l.failures = l.failures[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func TestAcceptBackoff(t *testing.T) {
	checkLeaks(t)
	s := &Server{Config: Config{Exports: []*Export{{Backend: newMem(4096)}}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln, failures: []error{tempErr{}, syscall.EMFILE, syscall.ECONNABORTED}}
	done := make(chan error, 1)
	go func() { done <- s.Serve(fl) }()
	c := connect(t, "tcp", ln.Addr().String(), clientOpts{})
	c.wantErrno(c.read(0, 512, 0), 0)
	c.disc()
	s.Close()
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	// A permanent error ends Serve.
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	perm := errors.New("permanent")
	s2 := &Server{Config: Config{Exports: []*Export{{Backend: newMem(4096)}}}}
	if err := s2.Serve(&flakyListener{Listener: ln2, failures: []error{perm}}); err != perm {
		t.Fatalf("Serve: %v", err)
	}
	ln2.Close()
}

func TestConnStateAndListeners(t *testing.T) {
	var mu sync.Mutex
	var states []ConnState
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, Config{ConnState: func(_ net.Conn, s ConnState) {
		mu.Lock()
		states = append(states, s)
		mu.Unlock()
	}})
	go ts.srv.Serve(ul)
	c := connect(t, "unix", sock, clientOpts{structured: true})
	c.wantErrno(c.read(0, 512, 0), 0)
	c.disc()
	c = ts.dial()
	c.sendFlags(FlagCFixedNewstyle)
	c.wantRep(c.opt(OptAbort, nil), RepAck)
	c.expectClosed()
	ts.waitConns(0)
	mu.Lock()
	defer mu.Unlock()
	want := []ConnState{StateNew, StateActive, StateClosed, StateNew, StateClosed}
	if !slices.Equal(states, want) {
		t.Fatalf("states %v, want %v", states, want)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{Exports: []*Export{{Name: "a"}}},
		{Exports: []*Export{{Name: "a", Backend: newMem(1)}, {Name: "a", Backend: newMem(1)}}},
		{Exports: []*Export{{Name: strings.Repeat("x", MaxStringLen+1), Backend: newMem(1)}}},
		{Exports: []*Export{{Name: "a\x00", Backend: newMem(1)}}},
		{Exports: []*Export{{Description: "\xff", Backend: newMem(1)}}},
	} {
		s := &Server{Config: cfg}
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		if err := s.Serve(ln); err == nil || errors.Is(err, ErrServerClosed) {
			t.Errorf("config %+v accepted: %v", cfg, err)
		}
		ln.Close()
	}
}

// A client that never reads its replies cannot make Shutdown overstay its context.
func TestShutdownWithClientNotReading(t *testing.T) {
	ts := startServer(t, Config{MaxInFlight: 4})
	c := ts.connect(clientOpts{})
	c.wantErrno(c.writeAt(0, pattern(testSize, 3), 0), 0)
	var b []byte
	for range 2000 {
		b = AppendRequest(b, Request{Type: CmdRead, Length: testSize, Cookie: 1}, false)
	}
	go func() {
		c.nc.SetWriteDeadline(time.Now().Add(time.Minute))
		c.nc.Write(b) // blocks once the server stops reading
	}()
	// The reader has taken a full budget of READs, whose 1 MiB replies the client never
	// reads: the writer is stuck on the socket, so Shutdown cannot finish them. (A fixed sleep
	// here let a loaded machine call Shutdown before any request was in flight.)
	waitFor(t, "a full budget of reads", func() bool { return ts.mem.reads.Load() >= 4 })
	ctx, cancel := context.WithTimeout(bg, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := ts.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	// A bound on a hang, not a timing assertion: Shutdown must give up when its context
	// does, long before the client's one-minute write deadline could unblock anything.
	if d := time.Since(start); d > 20*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	ts.waitConns(0)
}
