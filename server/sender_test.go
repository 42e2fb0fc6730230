package server

import (
	"net"
	"testing"
)

// A client that floods invalid requests and reads none of the answers is read only until
// the reply queue is full: the reader then waits, and the queue never grows past its limit.
// Every answer still arrives, in order, once the client reads.
func TestRejectFloodQueueStaysBounded(t *testing.T) {
	checkLeaks(t)
	s := &Server{Config: Config{Exports: []*Export{{Backend: newMem(4096)}}, MaxInFlight: 4}}
	if err := s.init(); err != nil {
		t.Fatal(err)
	}
	cl, sv := net.Pipe() // no buffering: an unread reply blocks its writer at once
	c := newConn(s, sv)
	done := make(chan struct{})
	go func() { defer close(done); c.serve() }()
	defer func() { cl.Close(); <-done }()
	tc := negotiateClient(t, cl, clientOpts{})

	const n = 100
	reqs := make([]Request, n)
	for i := range reqs {
		// Past the end of the export: EINVAL from the reader itself, no worker involved.
		reqs[i] = Request{Type: CmdRead, Offset: 1 << 40, Length: 512, Cookie: uint64(1000 + i)}
	}
	sent := make(chan error, 1)
	go func() {
		for _, r := range reqs {
			tc.setSent(r)
			if _, err := cl.Write(AppendRequest(nil, r, false)); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	limit := s.maxInFlight() + 8
	queued := func() int {
		c.snd.mu.Lock()
		defer c.snd.mu.Unlock()
		return len(c.snd.queue)
	}
	// The first reply is taken off the queue by its writer, which then blocks in the pipe;
	// the rest pile up until the reader has to wait.
	waitFor(t, "the reply queue to fill", func() bool { return queued() == limit })

	for i := range n {
		r := tc.recv()
		if r.cookie != reqs[i].Cookie || r.errno != EINVAL {
			t.Fatalf("reply %d: cookie %d errno %v, want %d EINVAL", i, r.cookie, r.errno, reqs[i].Cookie)
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("sending: %v", err)
	}
	c.snd.mu.Lock()
	peak := c.snd.peak
	c.snd.mu.Unlock()
	if peak != limit {
		t.Fatalf("reply queue peaked at %d, want the limit %d", peak, limit)
	}
	tc.disc()
}
