// Metadata cache sizes from QEMU's qcow2 options (l2-cache-size, refcount-cache-size,
// cache-size, l2-cache-entry-size, cache-clean-interval), with QEMU 7.2's defaults and limits.
package qcow2

import (
	"fmt"
	"math"
	"time"
)

// QEMU's defaults on Linux (docs/allocation.md, "Metadata cache sizes").
const (
	// defaultL2CacheMax is l2-cache-size's default: with 64 KiB clusters it maps 256 GiB.
	defaultL2CacheMax = 32 << 20
	// defaultCacheCleanInterval is cache-clean-interval's default.
	defaultCacheCleanInterval = 600 * time.Second
	// defaultSliceMax is the L2 cache entry size used when the cache cannot map the whole disk
	// and l2-cache-entry-size is not given.
	defaultSliceMax = 4096
	// NoCacheClean, as OpenOptions.CacheCleanInterval, disables cache cleaning
	// (cache-clean-interval=0).
	NoCacheClean time.Duration = -1
)

// cacheSizes is what the options resolve to.
type cacheSizes struct {
	l2Bytes       uint64 // L2 cache size in bytes, before the minimum entry count
	sliceBytes    uint64 // bytes of one L2 cache entry (a slice of an L2 table)
	refcountBytes uint64 // refcount cache size in bytes, before the minimum entry count
	clean         time.Duration
}

// refcountEntries is the refcount cache's capacity in blocks (at least minRefBlockCache).
func (c cacheSizes) refcountEntries(g Geometry) int {
	return int(max(c.refcountBytes/g.ClusterSize(), minRefBlockCache))
}

// resolveCacheSizes applies QEMU's read_cache_sizes and qcow2_update_options_prepare to the
// options for an image of the given geometry and virtual size. An option is "set" when it is
// not zero (the command line maps an explicit 0 to 1 byte, which gives the same sizes).
func resolveCacheSizes(o *OpenOptions, g Geometry, virtualSize uint64) (cacheSizes, error) {
	cs := g.ClusterSize()
	entryBytes := uint64(l2EntryBytes(g))
	maxL2 := alignUp(ceilDiv(virtualSize, cs)*entryBytes, cs)
	minRefcount := uint64(minRefBlockCache) * cs

	combinedSet, l2Set, rcSet, sliceSet := o.CacheBytes > 0, o.L2CacheBytes > 0, o.RefcountCacheBytes > 0, o.L2CacheEntrySize > 0
	combined := uint64(max(o.CacheBytes, 0))
	l2Setting := uint64(defaultL2CacheMax)
	if l2Set {
		l2Setting = uint64(o.L2CacheBytes)
	}
	rc := uint64(max(o.RefcountCacheBytes, 0))
	slice := cs
	if sliceSet {
		slice = uint64(o.L2CacheEntrySize)
	}
	l2 := min(maxL2, l2Setting)

	if combinedSet {
		switch {
		case l2Set && rcSet:
			return cacheSizes{}, fmt.Errorf("%w: cache-size, l2-cache-size and refcount-cache-size may not be set at the same time", errCacheOption)
		case l2Set && l2Setting > combined:
			return cacheSizes{}, fmt.Errorf("%w: l2-cache-size may not exceed cache-size", errCacheOption)
		case rc > combined:
			return cacheSizes{}, fmt.Errorf("%w: refcount-cache-size may not exceed cache-size", errCacheOption)
		}
		switch {
		case l2Set:
			rc = combined - l2
		case rcSet:
			l2 = combined - rc
		case combined >= maxL2+minRefcount:
			l2 = maxL2
			rc = combined - l2
		default:
			rc = min(combined, minRefcount)
			l2 = combined - rc
		}
	}
	if l2 < maxL2 && !sliceSet {
		slice = min(cs, defaultSliceMax)
	}
	if slice < 1<<minClusterBits || slice > cs || slice&(slice-1) != 0 {
		return cacheSizes{}, fmt.Errorf("%w: L2 cache entry size must be a power of two between %d and the cluster size (%d)", errCacheOption, 1<<minClusterBits, cs)
	}
	if l2/slice > math.MaxInt32 {
		return cacheSizes{}, fmt.Errorf("%w: L2 cache size too big", errCacheOption)
	}
	if rc/cs > math.MaxInt32 {
		return cacheSizes{}, fmt.Errorf("%w: Refcount cache size too big", errCacheOption)
	}
	clean := o.CacheCleanInterval
	switch {
	case clean == 0:
		clean = defaultCacheCleanInterval
	case clean < 0:
		clean = 0
	case clean/time.Second > math.MaxUint32:
		return cacheSizes{}, fmt.Errorf("%w: Cache clean interval too big", errCacheOption)
	}
	return cacheSizes{l2Bytes: l2, sliceBytes: slice, refcountBytes: rc, clean: clean}, nil
}

// l2EntryBytes is the size of one L2 entry: 8 bytes, 16 with extended L2 entries.
func l2EntryBytes(g Geometry) int {
	if g.ExtendedL2 {
		return 16
	}
	return 8
}

func ceilDiv(a, b uint64) uint64 { return (a + b - 1) / b }
