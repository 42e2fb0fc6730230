// Metrics: the registry, its metric vectors, and the per-export hook constructors.
package metrics

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/qnbd/qnbd/internal/buildinfo"
)

// Options configure New.
type Options struct {
	// Version is the qnbd version reported by qnbd_build_info. Empty means what
	// buildinfo.Version gives without a linked version (the main module's version, or
	// "(devel)").
	Version string
	// Logger receives errors from the HTTP endpoint (failed gathers, shutdown problems).
	// Nil means slog.Default().
	Logger *slog.Logger
	// WebConfig secures Serve and ServeListener with TLS, client certificates and basic auth
	// (webconfig.go). Empty serves plain HTTP. Check it with WebConfigFile.Validate first: a
	// bad file otherwise surfaces only as ServeListener's error.
	WebConfig WebConfigFile
}

// Metrics owns a Prometheus registry holding every qnbd metric plus the Go runtime and process
// collectors. Create one per process with New, call Export once per configured export, and
// serve it with Serve or Handler. Its methods are safe for concurrent use.
type Metrics struct {
	reg    *prometheus.Registry
	logger *slog.Logger
	web    WebConfigFile
	server *ServerHooks

	// Vectors; per-export children are resolved from them once, in Export.
	allocated        *prometheus.CounterVec
	freed            *prometheus.CounterVec
	refTableGrows    *prometheus.CounterVec
	refTableClusters *prometheus.GaugeVec
	l1Entries        *prometheus.GaugeVec
	hostBytes        *prometheus.GaugeVec
	allocDuration    *prometheus.HistogramVec
	cacheRequests    *prometheus.CounterVec
	cacheEvictions   *prometheus.CounterVec
	flushes          *prometheus.CounterVec
	flushDuration    *prometheus.HistogramVec
	dirty            *prometheus.GaugeVec
	corrupt          *prometheus.GaugeVec
	requests         *prometheus.CounterVec
	requestDuration  *prometheus.HistogramVec
	bytes            *prometheus.CounterVec
	inflight         *prometheus.GaugeVec
	connections      *prometheus.GaugeVec
	bitmapDirty      *prometheus.GaugeVec
	bitmapStore      *prometheus.HistogramVec
	bitmapsBad       *prometheus.GaugeVec

	mu      sync.Mutex         // guards exports; taken only when an export is set up
	exports map[string]*Export // by label value
}

// New builds a registry with every qnbd metric family, the Go runtime and process collectors
// and qnbd_build_info. No export series exist until Export is called.
func New(opts Options) *Metrics {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	m := &Metrics{
		reg:     prometheus.NewRegistry(),
		logger:  logger,
		web:     opts.WebConfig,
		exports: make(map[string]*Export),
	}
	m.allocated = m.counterVec(famClustersAllocated)
	m.freed = m.counterVec(famClustersFreed)
	m.refTableGrows = m.counterVec(famRefTableGrows)
	m.refTableClusters = m.gaugeVec(famRefTableClusters)
	m.l1Entries = m.gaugeVec(famL1Entries)
	m.hostBytes = m.gaugeVec(famHostBytes)
	m.allocDuration = m.histogramVec(famAllocDuration)
	m.cacheRequests = m.counterVec(famCacheRequests)
	m.cacheEvictions = m.counterVec(famCacheEvictions)
	m.flushes = m.counterVec(famFlushes)
	m.flushDuration = m.histogramVec(famFlushDuration)
	m.dirty = m.gaugeVec(famImageDirty)
	m.corrupt = m.gaugeVec(famImageCorrupt)
	m.bitmapDirty = m.gaugeVec(famBitmapDirty)
	m.bitmapStore = m.histogramVec(famBitmapStoreDuration)
	m.bitmapsBad = m.gaugeVec(famBitmapsInconsistent)
	m.requests = m.counterVec(famRequests)
	m.requestDuration = m.histogramVec(famRequestDuration)
	m.bytes = m.counterVec(famBytes)
	m.inflight = m.gaugeVec(famInflight)
	m.connections = m.gaugeVec(famConnections)
	m.server = newServerHooks(m.counterVec(famHandshakes))

	build := m.gaugeVec(famBuildInfo)
	build.WithLabelValues(labelValue(buildinfo.Version(opts.Version)), labelValue(runtime.Version())).Set(1)

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry returns the underlying registry, for tests and for adding collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Server returns the hooks for events that belong to no export (handshakes). It is the same
// value on every call.
func (m *Metrics) Server() *ServerHooks { return m.server }

// Export is one export's set of pre-resolved metric children. Its Image and NBD hooks may be
// used from any number of goroutines.
type Export struct {
	name  string
	image *ImageHooks
	nbd   *NBDHooks
}

// Name returns the export label value.
func (e *Export) Name() string { return e.name }

// Image returns the hooks to pass to the qcow2 engine for this export's image.
func (e *Export) Image() *ImageHooks { return e.image }

// NBD returns the hooks to pass to the NBD server for this export.
func (e *Export) NBD() *NBDHooks { return e.nbd }

// DefaultExportLabel is the export label value used for the empty export name (qemu-nbd's
// default export when -x is not given), because an empty label value is the same as no label
// in Prometheus.
const DefaultExportLabel = "(default)"

// ErrExportLabel is returned by Export for a name that cannot be used as a label value.
var ErrExportLabel = errors.New("metrics: export name unusable as a label")

// Export returns the metrics of the export called name, creating and zero-initialising every
// series of that export on the first call (later calls return the same value). Call it once
// per configured export at startup: the export label's cardinality is whatever the caller
// passes here, never what clients ask for.
func (m *Metrics) Export(name string) (*Export, error) {
	label := name
	if label == "" {
		label = DefaultExportLabel
	}
	if !utf8.ValidString(label) {
		return nil, fmt.Errorf("%w: %q is not valid UTF-8", ErrExportLabel, name)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.exports[label]; ok {
		if e.name != name {
			return nil, fmt.Errorf("%w: %q and %q both map to label %q", ErrExportLabel, e.name, name, label)
		}
		return e, nil
	}
	e := &Export{name: name, image: m.newImageHooks(label), nbd: m.newNBDHooks(label)}
	m.exports[label] = e
	return e, nil
}

func (m *Metrics) counterVec(f Family) *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: f.Name, Help: f.Help}, f.Labels)
	m.reg.MustRegister(v)
	return v
}

func (m *Metrics) gaugeVec(f Family) *prometheus.GaugeVec {
	v := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: f.Name, Help: f.Help}, f.Labels)
	m.reg.MustRegister(v)
	return v
}

func (m *Metrics) histogramVec(f Family) *prometheus.HistogramVec {
	v := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: f.Name, Help: f.Help, Buckets: latencyBuckets}, f.Labels)
	m.reg.MustRegister(v)
	return v
}

// labelValue makes s usable as a label value (valid UTF-8) for values we do not choose.
func labelValue(s string) string {
	return strings.ToValidUTF8(s, "\uFFFD")
}
