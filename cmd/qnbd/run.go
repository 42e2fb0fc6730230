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

// opened is one export's open backend.
type opened struct {
	name    string
	backend server.Backend
	closer  io.Closer
}

// serve runs the server until a signal or, without -t, until the last client has gone.
// lns and ready are set in a --fork child.
func serve(cfg *config, lns []net.Listener, ready *os.File, stderr io.Writer) int {
	log := newLogger(cfg.log, stderr)

	// --metrics-addr: up before the images are opened (see metrics.go); nil without it.
	var me *metricsEndpoint
	if cfg.metricsAddr != "" {
		var err error
		if me, err = startMetricsEndpoint(cfg.metricsAddr, cfg.metricsWeb, log); err != nil {
			return fail(stderr, err)
		}
		defer me.Close()
	}

	var unixPath string
	if lns == nil {
		ls, err := resolveListen(cfg)
		if err != nil {
			return fail(stderr, err)
		}
		if lns, err = listen(ls); err != nil {
			return fail(stderr, fmt.Errorf("cannot listen: %w", err))
		}
		unixPath = ls.unixPath
	} else {
		unixPath = cfg.socket
	}
	closeListeners := func() {
		for _, ln := range lns {
			ln.Close()
		}
		if unixPath != "" {
			os.Remove(unixPath)
		}
	}

	var backends []opened
	var nbdHooks []server.ExportHooks
	closeBackends := func() error {
		var errs []error
		for _, b := range backends {
			if err := b.closer.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing export '%s': %w", b.name, err))
			}
		}
		return errors.Join(errs...)
	}
	for _, e := range cfg.exports {
		imageHooks, exportHooks, err := me.exportHooks(e.name)
		if err != nil {
			closeBackends()
			closeListeners()
			return fail(stderr, err)
		}
		b, c, err := openExport(e, cfg, openEnv{hooks: imageHooks, log: log, stderr: stderr})
		if err != nil {
			closeBackends()
			closeListeners()
			return fail(stderr, err)
		}
		backends = append(backends, opened{name: e.name, backend: b, closer: c})
		nbdHooks = append(nbdHooks, exportHooks)
	}

	exports := make([]*server.Export, len(cfg.exports))
	for i, e := range cfg.exports {
		exports[i] = &server.Export{
			Name:            e.name,
			Description:     e.description,
			Backend:         backends[i].backend,
			ReadOnly:        e.readOnly,
			MultiConn:       cfg.shared != 1, // qemu-nbd: CAN_MULTI_CONN unless -e 1
			Trim:            cfg.discard,
			DetectZeroes:    cfg.detectZeroes,
			AllocationDepth: cfg.allocDepth,
			Bitmaps:         e.bitmaps,
			MinBlockSize:    minBlockSize(backends[i].backend),
			Hooks:           nbdHooks[i],
		}
	}

	limit := cfg.handshakeLimit
	if limit == 0 {
		limit = -1 // --handshake-limit 0: no limit
	}
	idle := newIdleTracker(cfg.persistent)
	srv := &server.Server{Config: server.Config{
		Exports:        exports,
		HandshakeLimit: limit,
		MaxConns:       cfg.shared,
		Hooks:          me.serverHooks(),
		ConnState:      idle.connState,
		Logger:         log,
		ClientErrors:   clientErrorPrinter(stderr),
		TLSConfig:      cfg.tls.tlsConfig(),
		Authorize:      cfg.tls.authorize(),
	}}
	defer cfg.tls.close()

	var pidLock *os.File
	if cfg.pidFile != "" {
		f, err := writePidFile(cfg.pidFile)
		if err != nil {
			closeBackends()
			closeListeners()
			return fail(stderr, err)
		}
		pidLock = f
		defer pidLock.Close()
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	serveErr := make(chan error, len(lns))
	for _, ln := range lns {
		go func() { serveErr <- srv.Serve(ln) }()
	}
	me.setReady(true)
	if ready != nil {
		// qemu-nbd's daemon frees the working directory once set up.
		os.Chdir("/")
		ready.Write([]byte{readyByte})
		ready.Close()
		if err := detachStderr(); err != nil {
			log.Warn("qnbd: cannot detach from the caller's stderr", "err", err)
		}
	}

	status := waitForStop(cfg, sigs, idle, serveErr, log, stderr)
	me.setReady(false)
	ctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
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
	cancel()
	closeListeners()
	for _, b := range backends {
		if err := b.backend.Flush(context.Background()); err != nil {
			fmt.Fprintf(stderr, "qnbd: flushing export '%s': %v\n", b.name, err)
			status = 1
		}
	}
	if err := closeBackends(); err != nil {
		fmt.Fprintf(stderr, "qnbd: %v\n", err)
		status = 1
	}
	return status
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
