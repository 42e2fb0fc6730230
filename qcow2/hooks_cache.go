// Cache occupancy: an optional hook through which an observer learns how full the metadata
// caches are.
package qcow2

// CacheHooks is an optional extension of Hooks: when the Hooks given in OpenOptions also
// implements it, the engine reports how much memory each metadata cache holds. Its rules are
// those of Hooks (fast, non-blocking, no calls back into the Image).
type CacheHooks interface {
	// CacheOccupancy reports the bytes of tables cache holds in memory and the most it may
	// hold, whenever either changed since the last report.
	CacheOccupancy(cache CacheKind, bytes, capacity uint64)
}

// cacheReport is the occupancy last reported for one cache.
type cacheReport struct{ bytes, capacity uint64 }

// reportOccupancy tells the CacheHooks, if any, the caches' occupancy when it changed. Called
// with mu held, after the caches were trimmed.
func (img *Image) reportOccupancy() {
	ch, ok := img.hooks.(CacheHooks)
	if !ok {
		return
	}
	size, capacity := img.l2.occupancy()
	sb := img.caches.sliceBytes
	img.reportCache(ch, CacheL2, uint64(size)*sb, uint64(capacity)*sb)
	if img.alloc != nil {
		size, capacity := img.alloc.cache.occupancy()
		cs := img.geo.ClusterSize()
		img.reportCache(ch, CacheRefBlock, uint64(size)*cs, uint64(capacity)*cs)
	}
}

func (img *Image) reportCache(ch CacheHooks, k CacheKind, bytes, capacity uint64) {
	r := cacheReport{bytes, capacity}
	if int(k) >= len(img.occupancy) || img.occupancy[k] == r {
		return
	}
	img.occupancy[k] = r
	ch.CacheOccupancy(k, bytes, capacity)
}
