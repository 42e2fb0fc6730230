// Server lifecycle, modelled on net/http: Serve with accept backoff, connection tracking,
// Shutdown and Close.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Defaults for the zero values of Config.
const (
	// DefaultHandshakeLimit bounds the time from accept to the end of option haggling
	// (qemu-nbd's --handshake-limit default).
	DefaultHandshakeLimit = 10 * time.Second
	// DefaultMaxOptions is how many options a client may send before GO or EXPORT_NAME.
	DefaultMaxOptions = 32
	// DefaultMaxOptionLen bounds an option's payload unless its content bounds it (INFO and GO
	// may reach 4+4096+2+2*65535 bytes; EXPORT_NAME is at most one string).
	DefaultMaxOptionLen = 64 << 10
	// DefaultMaxInFlight is the number of requests one connection may have running at once.
	DefaultMaxInFlight = 32
	// DefaultMaxInFlightBytes bounds the READ and WRITE payload bytes one connection holds in
	// memory at once (requests beyond it wait in the socket: backpressure).
	DefaultMaxInFlightBytes = 2 * MaxPayload
)

// Config configures a Server. It must not change after the first call to Serve.
type Config struct {
	// Exports are served by name. At least one is needed.
	Exports []*Export
	// HandshakeLimit bounds the handshake: zero means DefaultHandshakeLimit, negative means no
	// limit. A client still negotiating when it expires is disconnected.
	HandshakeLimit time.Duration
	// MaxConns limits the open connections (qemu-nbd -e); zero means unlimited. At the limit
	// the server stops accepting, as qemu-nbd does, and further clients wait in the listen
	// backlog.
	MaxConns int
	// MaxOptions limits the options before GO; zero means DefaultMaxOptions.
	MaxOptions int
	// MaxOptionLen limits an option payload not bounded by its content; zero means
	// DefaultMaxOptionLen. A longer option is a hard disconnect.
	MaxOptionLen uint32
	// MaxInFlight limits concurrent requests per connection; zero means DefaultMaxInFlight.
	MaxInFlight int
	// MaxInFlightBytes limits payload memory per connection; zero means
	// DefaultMaxInFlightBytes. Values below MaxPayload are raised to it.
	MaxInFlightBytes int64
	// NoExtendedHeaders answers NBD_OPT_EXTENDED_HEADERS with NBD_REP_ERR_UNSUP.
	NoExtendedHeaders bool
	// NoSparseReads disables OFFSET_HOLE chunks in structured READ replies.
	NoSparseReads bool
	// TLSConfig, when set, makes the server FORCEDTLS: before NBD_OPT_STARTTLS every other
	// option is refused with NBD_REP_ERR_TLS_REQD (EXPORT_NAME closes), and after it the
	// connection continues over TLS with nothing negotiated before carried over. It is called
	// once per STARTTLS, so that new credentials apply to new handshakes; the config should
	// set MinVersion (qnbd's is TLS 1.2) and its client verification.
	TLSConfig func() *tls.Config
	// Authorize, when set with TLSConfig, is called after each TLS handshake; an error
	// closes the connection before any option is read over TLS, and its text is logged as
	// the reason (qemu-nbd's is "TLS x509 authz check for DN is denied").
	Authorize func(tls.ConnectionState) error
	// Hooks observes handshakes; nil means none.
	Hooks ServerHooks
	// ConnState, when set, is called synchronously as a connection changes state.
	ConnState func(net.Conn, ConnState)
	// Logger receives errors and, at debug level, per-connection events; nil discards.
	Logger *slog.Logger
	// ClientErrors, when set, receives the client failures qemu-nbd prints on its standard
	// error, in qemu-nbd's words: failed handshakes and connections dropped for an error. It
	// is called synchronously from the connection's goroutine and must not block.
	ClientErrors func(*ClientError)
}

// ConnState is a connection's lifecycle stage as reported to Config.ConnState.
type ConnState uint8

// Connection states.
const (
	// StateNew: accepted, handshake not finished.
	StateNew ConnState = iota
	// StateActive: in the transmission phase on an export.
	StateActive
	// StateClosed: closed; reported exactly once per connection.
	StateClosed
)

func (s ConnState) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateActive:
		return "active"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// Server serves NBD exports. Create it with a Config and call Serve for each listener.
type Server struct {
	Config Config

	initOnce sync.Once
	initErr  error
	exports  *exportSet
	log      *slog.Logger
	slots    chan struct{}   // MaxConns semaphore; nil when unlimited
	ctx      context.Context // passed to Backend calls; cancelled by Close
	cancel   context.CancelFunc

	inShutdown atomic.Bool
	done       chan struct{} // closed when shutting down

	mu        sync.Mutex
	listeners map[*net.Listener]struct{}
	conns     map[*conn]struct{}
}

func (s *Server) init() error {
	s.initOnce.Do(func() {
		s.done = make(chan struct{})
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.listeners = make(map[*net.Listener]struct{})
		s.conns = make(map[*conn]struct{})
		s.log = s.Config.Logger
		if s.log == nil {
			s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
		}
		if len(s.Config.Exports) == 0 {
			s.initErr = errors.New("nbd: no exports configured")
			return
		}
		s.exports, s.initErr = newExportSet(s.Config.Exports)
		if s.Config.MaxConns > 0 {
			s.slots = make(chan struct{}, s.Config.MaxConns)
		}
	})
	return s.initErr
}

func (s *Server) handshakeLimit() time.Duration {
	switch l := s.Config.HandshakeLimit; {
	case l == 0:
		return DefaultHandshakeLimit
	case l < 0:
		return 0
	default:
		return l
	}
}

func (s *Server) maxOptions() int {
	if s.Config.MaxOptions > 0 {
		return s.Config.MaxOptions
	}
	return DefaultMaxOptions
}

func (s *Server) maxOptionLen() uint32 {
	if s.Config.MaxOptionLen > 0 {
		return s.Config.MaxOptionLen
	}
	return DefaultMaxOptionLen
}

func (s *Server) maxInFlight() int {
	if s.Config.MaxInFlight > 0 {
		return s.Config.MaxInFlight
	}
	return DefaultMaxInFlight
}

func (s *Server) maxInFlightBytes() int64 {
	n := s.Config.MaxInFlightBytes
	if n == 0 {
		n = DefaultMaxInFlightBytes
	}
	return max(n, MaxPayload)
}

func (s *Server) shuttingDown() bool { return s.inShutdown.Load() }

// Serve accepts connections on ln and serves each in its own goroutine. It returns
// ErrServerClosed after Shutdown or Close, or the listener's error.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.init(); err != nil {
		return err
	}
	if !s.trackListener(&ln, true) {
		return ErrServerClosed
	}
	defer s.trackListener(&ln, false)

	var delay time.Duration
	for {
		if s.slots != nil {
			select {
			case s.slots <- struct{}{}:
			case <-s.done:
				return ErrServerClosed
			}
		}
		nc, err := ln.Accept()
		if err != nil {
			s.releaseSlot()
			if s.shuttingDown() {
				return ErrServerClosed
			}
			if temporaryAcceptError(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				s.log.Warn("nbd: accept failed; retrying", "err", err, "delay", delay)
				select {
				case <-time.After(delay):
				case <-s.done:
					return ErrServerClosed
				}
				continue
			}
			return err
		}
		delay = 0
		c := newConn(s, nc)
		if !s.trackConn(c, true) {
			nc.Close()
			s.releaseSlot()
			return ErrServerClosed
		}
		s.connState(nc, StateNew)
		go c.serve()
	}
}

// temporaryAcceptError reports errors after which accepting again may succeed.
func temporaryAcceptError(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []syscall.Errno{syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EMFILE,
		syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM, syscall.EAGAIN, syscall.EINTR} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (s *Server) releaseSlot() {
	if s.slots != nil {
		<-s.slots
	}
}

func (s *Server) connState(nc net.Conn, st ConnState) {
	if f := s.Config.ConnState; f != nil {
		f(nc, st)
	}
}

func (s *Server) trackListener(ln *net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shuttingDown() {
			return false
		}
		s.listeners[ln] = struct{}{}
	} else {
		delete(s.listeners, ln)
	}
	return true
}

func (s *Server) trackConn(c *conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.shuttingDown() {
			return false
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

// connClosed is called once by each connection when it is gone.
func (s *Server) connClosed(c *conn) {
	s.trackConn(c, false)
	s.releaseSlot()
	s.connState(c.nc, StateClosed)
}

// beginShutdown stops accepting; it returns the connections open at that moment.
func (s *Server) beginShutdown() []*conn {
	if err := s.init(); err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.inShutdown.Swap(true) {
		close(s.done)
	}
	for ln := range s.listeners {
		(*ln).Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// Shutdown stops accepting, answers options still being negotiated with
// NBD_REP_ERR_SHUTDOWN, lets requests in flight finish, answers new requests with
// NBD_ESHUTDOWN, and closes each connection once it has nothing in flight. It returns when
// every connection is closed, or with ctx.Err() after closing the remaining connections
// forcibly when ctx ends first. Flushing and closing backends is the caller's job: the
// server does not own them.
func (s *Server) Shutdown(ctx context.Context) error {
	for _, c := range s.beginShutdown() {
		c.beginShutdown()
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if s.numConns() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			s.closeConns()
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close stops accepting and closes every connection at once, dropping requests in flight
// (those already running still finish against the backend).
func (s *Server) Close() error {
	s.beginShutdown()
	s.closeConns()
	if s.cancel != nil {
		s.cancel()
	}
	return nil
}

func (s *Server) closeConns() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.abort()
	}
}

func (s *Server) numConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
