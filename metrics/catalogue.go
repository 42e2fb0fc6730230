// Catalogue: the name, type, labels and help text of every metric family qnbd defines.
package metrics

// Type is the Prometheus type of a metric family.
type Type uint8

// The metric types qnbd uses.
const (
	Counter Type = iota
	Gauge
	Histogram
)

func (t Type) String() string {
	switch t {
	case Counter:
		return "counter"
	case Gauge:
		return "gauge"
	case Histogram:
		return "histogram"
	}
	return "unknown"
}

// Family describes one metric family defined by this package. The collectors are built from
// these values, so the catalogue cannot drift from what is exported.
type Family struct {
	Name   string
	Type   Type
	Labels []string
	Help   string
}

// Series returns the sample names the family exposes in the text format: the name itself, or
// for a histogram its _bucket, _sum and _count series.
func (f Family) Series() []string {
	if f.Type == Histogram {
		return []string{f.Name + "_bucket", f.Name + "_sum", f.Name + "_count"}
	}
	return []string{f.Name}
}

// Label names.
const (
	labelExport    = "export"
	labelKind      = "kind"
	labelCache     = "cache"
	labelResult    = "result"
	labelOp        = "op"
	labelVersion   = "version"
	labelGoVersion = "goversion"
	labelBitmap    = "bitmap"
)

// The qcow2 engine's families.
var (
	famClustersAllocated = Family{"qnbd_qcow2_clusters_allocated_total", Counter, []string{labelExport, labelKind},
		"Host clusters newly given refcount 1 in the image, by what they hold (data, l2, l1, refblock, reftable, bitmap)."}
	famClustersFreed = Family{"qnbd_qcow2_clusters_freed_total", Counter, []string{labelExport},
		"Host clusters whose refcount dropped to 0."}
	famRefTableGrows = Family{"qnbd_qcow2_reftable_grows_total", Counter, []string{labelExport},
		"Times the refcount table was moved to a larger copy."}
	famRefTableClusters = Family{"qnbd_qcow2_reftable_clusters", Gauge, []string{labelExport},
		"Size of the refcount table in clusters."}
	famL1Entries = Family{"qnbd_qcow2_l1_entries", Gauge, []string{labelExport},
		"Number of entries in the active L1 table."}
	famHostBytes = Family{"qnbd_qcow2_host_bytes", Gauge, []string{labelExport},
		"Size of the image's host file in bytes, as last reported by the engine."}
	famAllocDuration = Family{"qnbd_qcow2_allocation_duration_seconds", Histogram, []string{labelExport},
		"Wall time of one cluster allocation (of any number of clusters)."}
	famCacheRequests = Family{"qnbd_qcow2_cache_requests_total", Counter, []string{labelExport, labelCache, labelResult},
		"Lookups in a metadata cache (l2, refblock) by result (hit, miss)."}
	famCacheEvictions = Family{"qnbd_qcow2_cache_evictions_total", Counter, []string{labelExport, labelCache},
		"Entries evicted from a metadata cache."}
	famFlushes = Family{"qnbd_qcow2_flushes_total", Counter, []string{labelExport},
		"Flushes of the image (metadata caches written back and host file synced)."}
	famFlushDuration = Family{"qnbd_qcow2_flush_duration_seconds", Histogram, []string{labelExport},
		"Wall time of one image flush."}
	famImageDirty = Family{"qnbd_qcow2_image_dirty", Gauge, []string{labelExport},
		"1 while the image's dirty bit is set (lazy refcounts pending), else 0."}
	famImageCorrupt = Family{"qnbd_qcow2_image_corrupt", Gauge, []string{labelExport},
		"1 once the image has been marked corrupt, else 0."}
	famBitmapDirty = Family{"qnbd_qcow2_bitmap_dirty_bytes", Gauge, []string{labelExport, labelBitmap},
		"Guest bytes a persistent dirty bitmap marks dirty (its set bits times its granularity), as of the last flush."}
	famBitmapsInconsistent = Family{"qnbd_qcow2_bitmaps_inconsistent", Gauge, []string{labelExport},
		"Persistent bitmaps of the image that were in-use (inconsistent) when it was opened read-write: a writer crashed and they track nothing until removed."}
	famBitmapStoreDuration = Family{"qnbd_qcow2_bitmap_store_duration_seconds", Histogram, []string{labelExport},
		"Wall time of storing the persistent bitmaps at a clean close."}
)

// The NBD server's families.
var (
	famRequests = Family{"qnbd_nbd_requests_total", Counter, []string{labelExport, labelOp, labelResult},
		"NBD requests finished, by command and result (ok or the NBD errno name)."}
	famRequestDuration = Family{"qnbd_nbd_request_duration_seconds", Histogram, []string{labelExport, labelOp},
		"Time from taking an NBD request off the wire to its reply being ready."}
	famBytes = Family{"qnbd_nbd_bytes_total", Counter, []string{labelExport, labelOp},
		"Payload bytes of finished NBD requests (read or written, or the range length for trim, write_zeroes and cache)."}
	famInflight = Family{"qnbd_nbd_inflight_requests", Gauge, []string{labelExport},
		"NBD requests taken off the wire and not yet finished."}
	famConnections = Family{"qnbd_nbd_connections", Gauge, []string{labelExport},
		"Open NBD connections in the transmission phase."}
	famHandshakes = Family{"qnbd_nbd_handshakes_total", Counter, []string{labelResult},
		"NBD handshakes finished, by result (ok, aborted, timeout, rejected, error, tls_required, tls_failed, authz_denied)."}
)

// famBuildInfo is the process's identity.
var famBuildInfo = Family{"qnbd_build_info", Gauge, []string{labelVersion, labelGoVersion},
	"Always 1; labelled with the qnbd version and the Go version it was built with."}

var catalogue = []Family{
	famClustersAllocated, famClustersFreed, famRefTableGrows, famRefTableClusters, famL1Entries,
	famHostBytes, famAllocDuration, famCacheRequests, famCacheEvictions, famFlushes,
	famFlushDuration, famImageDirty, famImageCorrupt, famBitmapDirty, famBitmapsInconsistent,
	famBitmapStoreDuration,
	famRequests, famRequestDuration, famBytes, famInflight, famConnections, famHandshakes,
	famBuildInfo,
}

// Catalogue returns every metric family this package defines, in a fresh slice. The Go runtime
// (go_*) and process (process_*) collectors' families are registered too but not listed here.
func Catalogue() []Family {
	out := make([]Family, len(catalogue))
	for i, f := range catalogue {
		f.Labels = append([]string(nil), f.Labels...)
		out[i] = f
	}
	return out
}

// latencyBuckets are the upper bounds, in seconds, of every duration histogram: storage
// latency from 10µs (a cached read on fast flash) to 10s (a flush on a busy disk), in
// 1-2.5-5 steps.
var latencyBuckets = []float64{
	10e-6, 25e-6, 50e-6,
	100e-6, 250e-6, 500e-6,
	1e-3, 2.5e-3, 5e-3,
	10e-3, 25e-3, 50e-3,
	100e-3, 250e-3, 500e-3,
	1, 2.5, 5, 10,
}
