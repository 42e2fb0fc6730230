// Per-connection lifecycle: handshake, then one reader, bounded workers and one writer;
// shutdown, abort and the deferred recover that closes only this connection.
package server

import (
	"bufio"
	"net"
	"runtime/debug"
	"sync"
	"time"
)

// connPhase is where a connection is in the protocol.
type connPhase uint8

const (
	phaseHandshake connPhase = iota
	phaseTransmission
)

// readBufferSize is the bufio size for the socket; WRITE payloads larger than it are read
// straight into their pooled buffer.
const readBufferSize = 16 << 10

type conn struct {
	// Immutable after newConn.
	srv       *Server
	nc        net.Conn // the socket: deadlines and Close act on it
	remote    string
	closed    chan struct{} // closed by abort
	finish    func()        // asks the writer to close once queued replies are out; idempotent
	finishReq chan struct{}

	// Owned by the serving goroutine (handshake, then the request reader); wire changes only
	// during the handshake, before the writer starts.
	wire    net.Conn   // what the protocol is spoken over: nc, or the TLS session on it
	tlsOn   bool       // STARTTLS succeeded on this connection
	tlsSock *tlsSocket // the socket under the TLS session; the writer owns it after the handshake
	br      *bufio.Reader
	scratch []byte // option replies and request headers

	// Set when the handshake ends, read-only afterwards (workers read them).
	x      *export
	mode   replyMode
	metas  []metaContext
	tflags TransmissionFlags
	hooks  ExportHooks

	// Transmission machinery, created when the handshake ends.
	budget     *budget
	out        chan *reply // to the writer goroutine
	writerDone chan struct{}
	workers    sync.WaitGroup // Add only by the reader goroutine

	// Guarded by mu.
	mu       sync.Mutex
	phase    connPhase
	shutting bool // Shutdown asked this connection to wind down
	inflight int  // requests handed to workers whose reply is not yet queued

	abortOnce sync.Once
}

func newConn(s *Server, nc net.Conn) *conn {
	tuneSocket(nc)
	c := &conn{
		srv:       s,
		nc:        nc,
		wire:      nc,
		remote:    nc.RemoteAddr().String(),
		closed:    make(chan struct{}),
		finishReq: make(chan struct{}),
		br:        bufio.NewReaderSize(nc, readBufferSize),
		scratch:   make([]byte, 0, 512),
	}
	// finish never blocks: the writer sees finishReq, sends what is queued, then closes. By
	// then every request in flight has queued its reply (finish is called when none is left).
	c.finish = sync.OnceFunc(func() { close(c.finishReq) })
	return c
}

// serve runs the connection to its end. A panic anywhere on this goroutine is logged with its
// stack and closes only this connection.
func (c *conn) serve() {
	defer c.srv.connClosed(c)
	defer func() {
		if r := recover(); r != nil {
			c.srv.log.Error("nbd: panic serving connection; closing it",
				"remote", c.remote, "panic", r, "stack", string(debug.Stack()))
			c.abort()
		}
		c.endTransmission()
		c.nc.Close()
	}()
	x, n, ok := c.handshake()
	if !ok {
		return
	}
	c.startTransmission(x, n)
	c.readRequests()
}

// abort closes the socket at once, unblocking the reader, the writer and any wait for
// budget. Safe to call many times from any goroutine.
func (c *conn) abort() {
	c.abortOnce.Do(func() {
		close(c.closed)
		c.nc.Close()
	})
}

// beginShutdown is called by Server.Shutdown. A connection still negotiating is woken by an
// expired read deadline (its handshake answers NBD_REP_ERR_SHUTDOWN if it was mid-option); a
// connection in transmission finishes what it has in flight, then the writer closes it.
func (c *conn) beginShutdown() {
	c.mu.Lock()
	c.shutting = true
	phase := c.phase
	idle := c.inflight == 0
	c.mu.Unlock()
	if phase == phaseHandshake {
		c.nc.SetReadDeadline(time.Now())
		return
	}
	if idle {
		c.finish()
	}
}

// startTransmission records the negotiated state and starts the writer.
func (c *conn) startTransmission(x *export, n *negotiation) {
	c.x = x
	c.mode = n.mode
	if n.metaExport == x {
		c.metas = n.metas
	}
	c.tflags = n.transmissionFlags(x, OptGo)
	c.hooks = x.Hooks
	s := c.srv
	c.budget = newBudget(s.maxInFlight(), s.maxInFlightBytes())
	c.out = make(chan *reply, s.maxInFlight()+8)
	c.writerDone = make(chan struct{})
	go c.writeLoop()

	if c.hooks != nil {
		c.hooks.ConnOpened()
	}
	s.connState(c.nc, StateActive)

	c.mu.Lock()
	c.phase = phaseTransmission
	idle := c.shutting && c.inflight == 0
	c.mu.Unlock()
	if idle {
		c.finish()
	}
}

// endTransmission waits for the workers, lets the writer send every queued reply, and stops
// it. A no-op when the handshake never finished.
func (c *conn) endTransmission() {
	if c.out == nil {
		return
	}
	c.workers.Wait()
	close(c.out)
	<-c.writerDone
	if c.hooks != nil {
		c.hooks.ConnClosed()
	}
}

// requestDone is called by a worker after queueing its reply.
func (c *conn) requestDone() {
	c.mu.Lock()
	c.inflight--
	idle := c.shutting && c.inflight == 0
	c.mu.Unlock()
	if idle {
		c.finish()
	}
	c.workers.Done()
}
