// NBDHooks and ServerHooks: the server.ExportHooks and server.ServerHooks implementations.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qnbd/qnbd/server"
)

// NBDHooks implements server.ExportHooks for one export. Every series it touches was resolved
// when it was built: each method is a bounds check plus a few atomic updates, with no lock,
// allocation or map lookup. An Op the package does not know is ignored (the in-flight gauge
// still moves, so it stays balanced).
type NBDHooks struct {
	inflight    prometheus.Gauge
	connections prometheus.Gauge
	requests    [server.NumOps][numResults]prometheus.Counter
	duration    [server.NumOps]prometheus.Observer
	bytes       [server.NumOps]prometheus.Counter
}

var _ server.ExportHooks = (*NBDHooks)(nil)

// newNBDHooks resolves (and so creates at zero) every NBD series of one export: each op with
// each result, so rate() and alerts see a zero series before the first error.
func (m *Metrics) newNBDHooks(export string) *NBDHooks {
	h := &NBDHooks{
		inflight:    m.inflight.WithLabelValues(export),
		connections: m.connections.WithLabelValues(export),
	}
	for o := range h.requests {
		op := server.Op(o).String()
		for r := range h.requests[o] {
			h.requests[o][r] = m.requests.WithLabelValues(export, op, result(r).String())
		}
		h.duration[o] = m.requestDuration.WithLabelValues(export, op)
		h.bytes[o] = m.bytes.WithLabelValues(export, op)
	}
	return h
}

// ConnOpened adds one to qnbd_nbd_connections.
func (h *NBDHooks) ConnOpened() { h.connections.Inc() }

// ConnClosed removes one from qnbd_nbd_connections.
func (h *NBDHooks) ConnClosed() { h.connections.Dec() }

// RequestStarted adds one to qnbd_nbd_inflight_requests.
func (h *NBDHooks) RequestStarted(server.Op) { h.inflight.Inc() }

// RequestDone removes one from qnbd_nbd_inflight_requests and records the request's result,
// duration and bytes under its op.
func (h *NBDHooks) RequestDone(op server.Op, bytes uint64, d time.Duration, errno uint32) {
	h.inflight.Dec()
	if op >= server.NumOps {
		return
	}
	h.requests[op][resultOf(errno)].Inc()
	h.duration[op].Observe(seconds(d))
	h.bytes[op].Add(float64(bytes))
}

// ServerHooks implements server.ServerHooks. The export a client asked for is not a label
// (clients choose it, so it is unbounded); handshakes are counted by result only.
type ServerHooks struct {
	handshakes [server.NumHandshakeResults]prometheus.Counter
}

var _ server.ServerHooks = (*ServerHooks)(nil)

func newServerHooks(v *prometheus.CounterVec) *ServerHooks {
	h := &ServerHooks{}
	for r := range h.handshakes {
		h.handshakes[r] = v.WithLabelValues(server.HandshakeResult(r).String())
	}
	return h
}

// Handshake adds one to qnbd_nbd_handshakes_total{result}.
func (h *ServerHooks) Handshake(_ string, r server.HandshakeResult) {
	if r < server.NumHandshakeResults {
		h.handshakes[r].Inc()
	}
}
