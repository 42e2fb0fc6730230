// --metrics-addr: the Prometheus endpoint, started before any image is opened, and the hooks
// it hands to the engine and the server. --metrics-web-config secures it (TLS, client
// certificates, basic auth; docs/metrics-web-config.md). Without the flag none of this runs: every method
// works on a nil *metricsEndpoint and returns nil hooks.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"

	"github.com/qnbd/qnbd/metrics"
	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

// metricsEndpoint is the running /metrics, /healthz and /readyz server.
type metricsEndpoint struct {
	m      *metrics.Metrics
	ready  atomic.Bool
	cancel context.CancelFunc
	done   chan error
}

// startMetricsEndpoint listens on addr (HOST:PORT) and serves the metrics in the background,
// through the web config file webConfig when it is not "". It reads the web config and
// listens before returning, so that a bad file, or a busy or bad address, fails the start
// with one line, and so that /healthz answers while images are opened (a dirty image is
// repaired first).
func startMetricsEndpoint(addr, webConfig string, log *slog.Logger) (*metricsEndpoint, error) {
	web := metrics.WebConfigFile(webConfig)
	if err := web.Validate(); err != nil {
		return nil, fmt.Errorf("--metrics-web-config %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr %s: %w", addr, err)
	}
	m := metrics.New(metrics.Options{Version: qnbdVersion(), Logger: log, WebConfig: web})
	ctx, cancel := context.WithCancel(context.Background())
	me := &metricsEndpoint{m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { me.done <- m.ServeListener(ctx, ln, me.readiness) }()
	return me, nil
}

// readiness is /readyz: ready once every export is open and the NBD listeners serve.
func (me *metricsEndpoint) readiness() error {
	if !me.ready.Load() {
		return errors.New("exports are not open and serving yet")
	}
	return nil
}

// exportHooks registers export name and returns its engine and server hooks.
func (me *metricsEndpoint) exportHooks(name string) (qcow2.Hooks, server.ExportHooks, error) {
	if me == nil {
		return nil, nil, nil
	}
	ex, err := me.m.Export(name)
	if err != nil {
		return nil, nil, fmt.Errorf("--metrics-addr: export '%s': %w", name, err)
	}
	return ex.Image(), ex.NBD(), nil
}

// serverHooks returns the hooks for events of no export (handshakes).
func (me *metricsEndpoint) serverHooks() server.ServerHooks {
	if me == nil {
		return nil
	}
	return me.m.Server()
}

// setReady flips /readyz.
func (me *metricsEndpoint) setReady(ready bool) {
	if me != nil {
		me.ready.Store(ready)
	}
}

// Close stops the endpoint and waits for it.
func (me *metricsEndpoint) Close() error {
	if me == nil {
		return nil
	}
	me.ready.Store(false)
	me.cancel()
	return <-me.done
}
