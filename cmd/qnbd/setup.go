// What serve sets up before it serves, and the one path that takes it down again, whether
// the set-up failed half-way or the server stopped.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"

	"github.com/qnbd/qnbd/server"
)

// opened is one export's open backend.
type opened struct {
	name    string
	backend server.Backend
	closer  io.Closer
	hooks   server.ExportHooks // its metrics; nil without --metrics-addr
}

// setup holds what serve opened, in the order it opens them.
type setup struct {
	me       *metricsEndpoint // --metrics-addr; nil without
	lns      []net.Listener
	unixPath string // the -k socket to remove at the end
	backends []opened
	pidLock  *os.File // the locked --pid-file
}

// setUp starts the metrics endpoint (before the images: a dirty image is repaired at open,
// and /healthz answers meanwhile), listens unless a --fork parent already did (lns), opens
// every export and writes the pid file. On failure what it opened is closed again.
func setUp(cfg *config, lns []net.Listener, log *slog.Logger, stderr io.Writer) (_ *setup, err error) {
	st := &setup{lns: lns, unixPath: cfg.socket}
	defer func() {
		if err != nil {
			st.tearDown(nil) // st itself, not the nil the failing return hands back
		}
	}()
	if cfg.metricsAddr != "" {
		if st.me, err = startMetricsEndpoint(cfg.metricsAddr, cfg.metricsWeb, log); err != nil {
			return nil, err
		}
	}
	if st.lns == nil {
		ls, err := resolveListen(cfg)
		if err != nil {
			return nil, err
		}
		if st.lns, err = listen(ls); err != nil {
			return nil, fmt.Errorf("cannot listen: %w", err)
		}
		st.unixPath = ls.unixPath
	}
	for _, e := range cfg.exports {
		imageHooks, exportHooks, err := st.me.exportHooks(e.name)
		if err != nil {
			return nil, err
		}
		b, c, err := openExport(e, cfg, openEnv{hooks: imageHooks, log: log, stderr: stderr})
		if err != nil {
			return nil, err
		}
		st.backends = append(st.backends, opened{name: e.name, backend: b, closer: c, hooks: exportHooks})
	}
	if cfg.pidFile != "" {
		if st.pidLock, err = writePidFile(cfg.pidFile); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// tearDown closes the listeners (removing a Unix socket), flushes and closes the exports,
// then releases the pid file and the metrics endpoint. It reports flush and close failures
// on stderr (nil: after a failed set-up, when they are not news) and returns them.
func (st *setup) tearDown(stderr io.Writer) error {
	for _, ln := range st.lns {
		ln.Close()
	}
	if st.unixPath != "" {
		os.Remove(st.unixPath)
	}
	var errs []error
	for _, b := range st.backends {
		if stderr == nil {
			b.closer.Close()
			continue
		}
		if err := b.backend.Flush(context.Background()); err != nil {
			errs = append(errs, fmt.Errorf("flushing export '%s': %w", b.name, err))
		}
		if err := b.closer.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing export '%s': %w", b.name, err))
		}
	}
	for _, err := range errs {
		fmt.Fprintf(stderr, "qnbd: %v\n", err)
	}
	if st.pidLock != nil {
		st.pidLock.Close()
	}
	st.me.Close()
	return errors.Join(errs...)
}
