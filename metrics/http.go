// HTTP endpoint: /metrics, /healthz and /readyz, served with timeouts until a context ends.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyFunc reports whether the process is ready for traffic: nil once every export is open
// and listening, else an error saying what is missing. It is called on every /readyz request
// and must be safe for concurrent use.
type ReadyFunc func() error

// HTTP limits. A scrape of a few exports is a few hundred kB at most; nothing here needs long.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second
	idleTimeout       = 2 * time.Minute
	maxHeaderBytes    = 16 << 10
	gatherTimeout     = 20 * time.Second // below writeTimeout so the error reply still goes out
	maxScrapes        = 4                // concurrent /metrics requests
	shutdownTimeout   = 5 * time.Second
)

// Handler returns the HTTP handler for the endpoints:
//
//	GET /metrics  Prometheus text exposition of the registry
//	GET /healthz  200 while the process can answer at all (liveness)
//	GET /readyz   200 when ready returns nil, else 503 with the reason (readiness);
//	              a nil ready means always ready
//
// Other paths get 404, other methods 405.
func (m *Metrics) Handler(ready ReadyFunc) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:            promLogger{m.logger},
		ErrorHandling:       promhttp.ContinueOnError, // a failing collector must not hide the rest
		MaxRequestsInFlight: maxScrapes,
		Timeout:             gatherTimeout,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				plain(w, http.StatusServiceUnavailable, "not ready: "+err.Error()+"\n")
				return
			}
		}
		plain(w, http.StatusOK, "ready\n")
	})
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		plain(w, http.StatusOK, "qnbd metrics: /metrics /healthz /readyz\n")
	})
	return mux
}

func plain(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// Serve listens on addr (host:port; ":9810" for every address) and serves Handler(ready)
// until ctx ends, then shuts the server down, giving open scrapes a few seconds. It returns
// nil after a shutdown caused by ctx, or the error that stopped it (including a failure to
// listen). To learn about a busy port before starting anything else, listen yourself and use
// ServeListener.
func (m *Metrics) Serve(ctx context.Context, addr string, ready ReadyFunc) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: listen: %w", err)
	}
	return m.ServeListener(ctx, ln, ready)
}

// ServeListener is Serve on a listener the caller opened; ln is closed when it returns.
func (m *Metrics) ServeListener(ctx context.Context, ln net.Listener, ready ReadyFunc) error {
	srv := &http.Server{
		Handler:           m.Handler(ready),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(m.logger.Handler(), slog.LevelWarn),
	}
	done := make(chan error, 1)
	go func() { done <- m.web.serve(srv, ln, m.logger) }()
	select {
	case err := <-done:
		return fmt.Errorf("metrics: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		m.logger.Warn("metrics: shutdown", "err", err)
		_ = srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: serve: %w", err)
	}
	return nil
}

// promLogger adapts slog to promhttp's Println-style error log.
type promLogger struct{ l *slog.Logger }

func (p promLogger) Println(v ...any) { p.l.Error("metrics: " + fmt.Sprint(v...)) }
