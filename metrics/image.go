// ImageHooks: the qcow2.Hooks implementation, one per export, with its series pre-resolved.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qnbd/qnbd/qcow2"
)

// Sizes of the engine's enums. qcow2 does not export its counts; a test checks these still
// cover every value that has a name.
const (
	numAllocKinds = int(qcow2.AllocBitmap) + 1
	numCacheKinds = int(qcow2.CacheRefBlock) + 1
)

// Indexes of the hit/miss dimension of ImageHooks.cacheRequests.
const (
	cacheMiss = 0
	cacheHit  = 1
)

var cacheResultNames = [2]string{cacheMiss: "miss", cacheHit: "hit"}

// ImageHooks implements qcow2.Hooks for one export. Every series it touches was resolved when
// it was built, so each method is a bounds check plus one or a few atomic updates: no lock, no
// allocation, no map lookup. Values of an enum argument the package does not know are ignored.
type ImageHooks struct {
	allocated        [numAllocKinds]prometheus.Counter
	freed            prometheus.Counter
	allocDuration    prometheus.Observer
	refTableGrows    prometheus.Counter
	refTableClusters prometheus.Gauge
	l1Entries        prometheus.Gauge
	hostBytes        prometheus.Gauge
	cacheRequests    [numCacheKinds][2]prometheus.Counter
	cacheEvictions   [numCacheKinds]prometheus.Counter
	flushes          prometheus.Counter
	flushDuration    prometheus.Observer
	dirty            prometheus.Gauge
	corrupt          prometheus.Gauge
	// Bitmap series are made when the engine first names a bitmap (a label lookup per call:
	// BitmapDirty comes at flushes, not per request).
	bitmapDirty *prometheus.GaugeVec
	bitmapStore prometheus.Observer
	bitmapsBad  prometheus.Gauge
}

var (
	_ qcow2.Hooks       = (*ImageHooks)(nil)
	_ qcow2.BitmapHooks = (*ImageHooks)(nil)
)

// newImageHooks resolves (and so creates at zero) every qcow2 series of one export.
func (m *Metrics) newImageHooks(export string) *ImageHooks {
	h := &ImageHooks{
		freed:            m.freed.WithLabelValues(export),
		allocDuration:    m.allocDuration.WithLabelValues(export),
		refTableGrows:    m.refTableGrows.WithLabelValues(export),
		refTableClusters: m.refTableClusters.WithLabelValues(export),
		l1Entries:        m.l1Entries.WithLabelValues(export),
		hostBytes:        m.hostBytes.WithLabelValues(export),
		flushes:          m.flushes.WithLabelValues(export),
		flushDuration:    m.flushDuration.WithLabelValues(export),
		dirty:            m.dirty.WithLabelValues(export),
		corrupt:          m.corrupt.WithLabelValues(export),
		bitmapDirty:      m.bitmapDirty.MustCurryWith(prometheus.Labels{labelExport: export}),
		bitmapStore:      m.bitmapStore.WithLabelValues(export),
		bitmapsBad:       m.bitmapsBad.WithLabelValues(export),
	}
	for k := range h.allocated {
		h.allocated[k] = m.allocated.WithLabelValues(export, qcow2.AllocKind(k).String())
	}
	for c := range h.cacheRequests {
		cache := qcow2.CacheKind(c).String()
		for r := range h.cacheRequests[c] {
			h.cacheRequests[c][r] = m.cacheRequests.WithLabelValues(export, cache, cacheResultNames[r])
		}
		h.cacheEvictions[c] = m.cacheEvictions.WithLabelValues(export, cache)
	}
	return h
}

// ClustersAllocated adds n to qnbd_qcow2_clusters_allocated_total{kind}.
func (h *ImageHooks) ClustersAllocated(kind qcow2.AllocKind, n uint64) {
	if int(kind) < len(h.allocated) {
		h.allocated[kind].Add(float64(n))
	}
}

// ClustersFreed adds n to qnbd_qcow2_clusters_freed_total.
func (h *ImageHooks) ClustersFreed(n uint64) { h.freed.Add(float64(n)) }

// AllocationDone observes d in qnbd_qcow2_allocation_duration_seconds.
func (h *ImageHooks) AllocationDone(d time.Duration) { h.allocDuration.Observe(seconds(d)) }

// RefTableGrown counts one reftable growth and sets qnbd_qcow2_reftable_clusters.
func (h *ImageHooks) RefTableGrown(newClusters uint64) {
	h.refTableGrows.Inc()
	h.refTableClusters.Set(float64(newClusters))
}

// CacheAccess counts one hit or miss of cache.
func (h *ImageHooks) CacheAccess(cache qcow2.CacheKind, hit bool) {
	if int(cache) >= len(h.cacheRequests) {
		return
	}
	r := cacheMiss
	if hit {
		r = cacheHit
	}
	h.cacheRequests[cache][r].Inc()
}

// CacheEviction counts one eviction from cache.
func (h *ImageHooks) CacheEviction(cache qcow2.CacheKind) {
	if int(cache) < len(h.cacheEvictions) {
		h.cacheEvictions[cache].Inc()
	}
}

// Flushed counts one flush and observes its duration.
func (h *ImageHooks) Flushed(d time.Duration) {
	h.flushes.Inc()
	h.flushDuration.Observe(seconds(d))
}

// StateChanged sets the image gauges from s.
func (h *ImageHooks) StateChanged(s qcow2.State) {
	h.dirty.Set(boolValue(s.Dirty))
	h.corrupt.Set(boolValue(s.Corrupt))
	h.l1Entries.Set(float64(s.L1Entries))
	h.refTableClusters.Set(float64(s.RefTableClusters))
	h.hostBytes.Set(float64(s.HostBytes))
}

// BitmapDirty sets qnbd_qcow2_bitmap_dirty_bytes{bitmap}.
func (h *ImageHooks) BitmapDirty(name string, bytes uint64) {
	h.bitmapDirty.WithLabelValues(labelValue(name)).Set(float64(bytes))
}

// BitmapsInconsistent sets qnbd_qcow2_bitmaps_inconsistent.
func (h *ImageHooks) BitmapsInconsistent(n int) { h.bitmapsBad.Set(float64(n)) }

// BitmapsStored observes the duration of a store of the bitmaps.
func (h *ImageHooks) BitmapsStored(d time.Duration) { h.bitmapStore.Observe(seconds(d)) }

// seconds converts d for a histogram, clamping negative durations (which a monotonic clock
// should never give) to 0 so the _sum series never decreases.
func seconds(d time.Duration) float64 {
	if d < 0 {
		return 0
	}
	return d.Seconds()
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
