// The reply queue of a connection and who writes it: no goroutine of its own, but whichever
// worker queues a reply while nobody is writing (docs/server-performance.md).
package server

import (
	"net"
	"runtime/debug"
	"sync"
)

// sender is a connection's reply queue; startTransmission sets limit and room.L. The socket has at most one writer at a time: the
// goroutine whose send found nobody writing. It writes its own reply and every reply queued
// meanwhile, in queue order, coalescing what is waiting into vectored writes (up to maxBatch
// replies or maxBatchBytes each), and returns once the queue is empty. A worker thus
// answers without waking another goroutine, and replies that pile up while a write is
// blocked leave together in the next one.
//
// Invariant (under mu): the queue is empty unless writing is set. Once dead, replies are
// released unwritten, so that workers never block and buffers return to their pools.
type sender struct {
	mu        sync.Mutex
	queue     []*reply
	writing   bool // a goroutine is writing the queue
	dead      bool // the socket failed or was closed: nothing more is written
	finishing bool // close the socket once the queue is written
	limit     int  // the reader waits while this many replies are queued
	peak      int  // for tests: the longest the queue has been
	room      sync.Cond

	// Owned by the goroutine that is writing.
	batch []*reply
	vec   net.Buffers
	tls   *tlsSocket // non-nil under TLS: flushed after each batch
}

// send queues r. If nobody is writing, the caller becomes the writer and writes the queue
// before returning; the request reader passes canWrite=false and hands that job to a new
// goroutine instead, so that it never blocks on the socket (a client that sends without
// reading must still be read until its budget is spent).
//
// The reader also waits while s.limit replies are queued: a client that floods invalid
// requests without reading the answers gets backpressure, not an ever-growing queue. (Workers need no such limit: each holds a budget
// slot until its reply is written.)
func (c *conn) send(r *reply, canWrite bool) {
	s := &c.snd
	s.mu.Lock()
	for !canWrite && len(s.queue) >= s.limit && s.writing && !s.dead {
		s.room.Wait()
	}
	if s.dead {
		s.mu.Unlock()
		c.release(r)
		return
	}
	s.queue = append(s.queue, r)
	s.peak = max(s.peak, len(s.queue))
	if s.writing {
		s.mu.Unlock()
		return
	}
	s.writing = true
	s.mu.Unlock()
	if canWrite {
		c.writeQueue()
		return
	}
	c.workers.Add(1) // only the reader sends with canWrite=false, so Add stays with it
	go func() {
		defer c.workers.Done()
		defer func() {
			if p := recover(); p != nil { // writeQueue has closed the connection
				c.srv.log.Error("nbd: panic writing replies; closing connection",
					"remote", c.remote, "panic", p, "stack", string(debug.Stack()))
			}
		}()
		c.writeQueue()
	}()
}

// writeQueue writes batches off the queue until it is empty, then gives up the writer role;
// the caller holds it (writing is set). If finish was asked for, it closes the socket after
// the last batch.
func (c *conn) writeQueue() {
	s := &c.snd
	done := false
	defer func() {
		if !done { // a panic while writing: nothing more goes out on this socket
			s.mu.Lock()
			s.dead, s.writing = true, false
			rest := s.takeAll()
			s.room.Broadcast()
			s.mu.Unlock()
			c.abort()
			c.releaseAll(rest)
		}
	}()
	s.mu.Lock()
	for len(s.queue) > 0 && !s.dead {
		s.batch = s.take(s.batch[:0])
		s.room.Broadcast()
		s.mu.Unlock()
		ok := c.flush(s.batch)
		clear(s.batch)
		s.mu.Lock()
		if !ok {
			s.dead = true
		}
	}
	s.writing = false
	closeNow := s.finishing && !s.dead
	if s.finishing {
		s.dead = true
	}
	rest := s.takeAll()
	s.room.Broadcast()
	s.mu.Unlock()
	done = true
	if closeNow {
		c.abort()
	}
	c.releaseAll(rest)
}

// take moves the first replies of the queue into batch, at most maxBatch of them or about
// maxBatchBytes (always at least one).
func (s *sender) take(batch []*reply) []*reply {
	size, n := 0, 0
	for n < len(s.queue) && n < maxBatch && (n == 0 || size < maxBatchBytes) {
		size += s.queue[n].size()
		n++
	}
	batch = append(batch, s.queue[:n]...)
	k := copy(s.queue, s.queue[n:])
	clear(s.queue[k:])
	s.queue = s.queue[:k]
	return batch
}

// takeAll empties the queue, returning what it held (only ever non-empty once dead).
func (s *sender) takeAll() []*reply {
	if len(s.queue) == 0 {
		return nil
	}
	rest := append([]*reply(nil), s.queue...)
	clear(s.queue)
	s.queue = s.queue[:0]
	return rest
}

func (c *conn) releaseAll(rs []*reply) {
	for _, r := range rs {
		c.release(r)
	}
}

// finish asks for the socket to close once every queued reply is written; it never blocks
// and may be called many times. It is called when no request is in flight, so every reply
// due has been queued by then; later ones (requests rejected after it) are dropped.
func (c *conn) finish() {
	s := &c.snd
	s.mu.Lock()
	if s.finishing || s.dead {
		s.mu.Unlock()
		return
	}
	s.finishing = true
	if s.writing {
		s.mu.Unlock() // the writer closes after its last batch
		return
	}
	s.dead = true
	s.mu.Unlock()
	c.abort()
}
