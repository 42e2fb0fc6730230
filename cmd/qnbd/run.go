// Wiring: config -> backends -> server.Config -> Serve; signals, the non-persistent exit,
// and the clean stop (stop accepting, finish requests in flight, flush, close).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/qnbd/qnbd/server"
)

// shutdownGrace bounds how long a signal waits for requests in flight.
const shutdownGrace = 10 * time.Second

// run is the whole program; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args)
	if err != nil {
		return fail(stderr, err)
	}
	switch {
	case cfg.help:
		printUsage(stdout)
		return 0
	case cfg.version:
		printVersion(stdout)
		return 0
	case cfg.list:
		return runList(cfg, stdout, stderr)
	}
	child, lns, ready, err := forkChild()
	if err != nil {
		return fail(stderr, err)
	}
	if cfg.fork && !child {
		return forkParent(cfg, args, stderr)
	}
	return serve(cfg, lns, ready, stderr)
}

// fail prints err as qemu-nbd prints its errors and returns the failure status: the
// program name, the message, and for some usage errors qemu-nbd's pointer to --help (getopt's
// own messages start with argv[0] as glibc prints it).
func fail(stderr io.Writer, err error) int {
	var ue *usageError
	errors.As(err, &ue)
	switch {
	case ue != nil && ue.hint == hintGetopt:
		fmt.Fprintf(stderr, "%s: %v\n%s: Try `%s --help' for more information.\n", argv0(), err, progName, argv0())
	case ue != nil && ue.hint == hintArgs:
		fmt.Fprintf(stderr, "%s: %v\nTry `%s --help' for more information.\n", progName, err, argv0())
	default:
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
	}
	return 1
}

// serve runs the server until a signal or, without -t, until the last client has gone.
// lns and ready are set in a --fork child.
func serve(cfg *config, lns []net.Listener, ready *os.File, stderr io.Writer) int {
	log := newLogger(cfg.log, stderr)
	defer cfg.tls.close()
	st, err := setUp(cfg, lns, log, stderr)
	if err != nil {
		return fail(stderr, err)
	}
	idle := newIdleTracker(cfg.persistent)
	srv := newServer(cfg, st, idle, log, stderr)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	serveErr := make(chan error, len(st.lns))
	for _, ln := range st.lns {
		go func() { serveErr <- srv.Serve(ln) }()
	}
	st.me.setReady(true)
	if ready != nil {
		daemonReady(ready, log)
	}

	status := waitForStop(cfg, sigs, idle, serveErr, log, stderr)
	st.me.setReady(false)
	shutdown(srv, sigs, log)
	if st.tearDown(stderr) != nil {
		status = 1
	}
	return status
}

// daemonReady tells a --fork parent that the server is up, and lets go of its stderr.
func daemonReady(ready *os.File, log *slog.Logger) {
	// qemu-nbd's daemon frees the working directory once set up.
	os.Chdir("/")
	ready.Write([]byte{readyByte})
	ready.Close()
	if err := detachStderr(); err != nil {
		log.Warn("qnbd: cannot detach from the caller's stderr", "err", err)
	}
}

// shutdown stops srv: no new clients, requests in flight finished within shutdownGrace, or
// at once on a second signal.
func shutdown(srv *server.Server, sigs <-chan os.Signal, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	go func() {
		select {
		case <-sigs: // a second signal: stop waiting
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("qnbd: requests still in flight were dropped", "err", err)
	}
}

// newServer makes the server of cfg's exports, opened in st.
func newServer(cfg *config, st *setup, idle *idleTracker, log *slog.Logger, stderr io.Writer) *server.Server {
	exports := make([]*server.Export, len(cfg.exports))
	for i, e := range cfg.exports {
		b := st.backends[i]
		exports[i] = &server.Export{
			Name:            e.name,
			Description:     e.description,
			Backend:         b.backend,
			ReadOnly:        e.readOnly,
			MultiConn:       cfg.shared != 1, // qemu-nbd: CAN_MULTI_CONN unless -e 1
			Trim:            cfg.discard,
			DetectZeroes:    cfg.detectZeroes,
			AllocationDepth: cfg.allocDepth,
			Bitmaps:         e.bitmaps,
			MinBlockSize:    minBlockSize(b.backend),
			Hooks:           b.hooks,
		}
	}
	limit := cfg.handshakeLimit
	if limit == 0 {
		limit = -1 // --handshake-limit 0: no limit
	}
	return &server.Server{Config: server.Config{
		Exports:        exports,
		HandshakeLimit: limit,
		MaxConns:       cfg.shared,
		Hooks:          st.me.serverHooks(),
		ConnState:      idle.connState,
		Logger:         log,
		ClientErrors:   clientErrorPrinter(stderr),
		TLSConfig:      cfg.tls.tlsConfig(),
		Authorize:      cfg.tls.authorize(),
	}}
}

// waitForStop waits for a stop signal, the last client's exit (without -t) or a Serve
// error, and returns the exit status. With --tls-creds, SIGHUP reloads the credentials and
// authz lists instead of stopping (docs/tls.md); without, it stops, as qemu-nbd does.
func waitForStop(cfg *config, sigs <-chan os.Signal, idle *idleTracker, serveErr <-chan error,
	log *slog.Logger, stderr io.Writer) int {
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP && cfg.tls.store() != nil {
				cfg.tls.reload(log)
				continue
			}
			log.Info("qnbd: stopping", "signal", s)
		case <-idle.done:
			log.Info("qnbd: last client disconnected; exiting (use -t to keep serving)")
		case err := <-serveErr:
			if !errors.Is(err, server.ErrServerClosed) {
				fmt.Fprintf(stderr, "qnbd: %v\n", err)
				return 1
			}
		}
		return 0
	}
}

// idleTracker implements qemu-nbd's exit without -t: once a client that reached
// transmission has disconnected and no client is left, the server stops.
type idleTracker struct {
	persistent bool
	mu         sync.Mutex
	open       int
	active     map[net.Conn]bool
	once       sync.Once
	done       chan struct{}
}

func newIdleTracker(persistent bool) *idleTracker {
	return &idleTracker{persistent: persistent, active: map[net.Conn]bool{}, done: make(chan struct{})}
}

func (t *idleTracker) connState(nc net.Conn, s server.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch s {
	case server.StateNew:
		t.open++
	case server.StateActive:
		t.active[nc] = true
	case server.StateClosed:
		t.open--
		negotiated := t.active[nc]
		delete(t.active, nc)
		if negotiated && t.open == 0 && !t.persistent {
			t.once.Do(func() { close(t.done) })
		}
	}
}

// writePidFile writes this process's pid to path under an exclusive lock held for the
// process's life, as QEMU does, so that two servers cannot share a pid file.
func writePidFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open pid file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot lock pid file '%s': %w", path, err)
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return nil, fmt.Errorf("failed to write pid file '%s': %w", path, err)
	}
	if _, err := fmt.Fprintf(f, "%d\n", os.Getpid()); err != nil {
		f.Close()
		return nil, fmt.Errorf("failed to write pid file '%s': %w", path, err)
	}
	return f, nil
}
