// Hooks: how an observer (the metrics package) learns what the engine does, without this
// package importing it.
package qcow2

import "time"

// AllocKind says what a newly allocated host cluster is for.
type AllocKind uint8

// Kinds of allocated clusters.
const (
	AllocData AllocKind = iota
	AllocL2
	AllocL1
	AllocRefBlock
	AllocRefTable
	AllocBitmap // bitmap directories, tables and data (bitmap_store.go)
	numAllocKinds
)

var allocKindNames = [numAllocKinds]string{"data", "l2", "l1", "refblock", "reftable", "bitmap"}

func (k AllocKind) String() string {
	if k < numAllocKinds {
		return allocKindNames[k]
	}
	return "unknown"
}

// CacheKind names one of the engine's metadata caches.
type CacheKind uint8

// The metadata caches.
const (
	CacheL2 CacheKind = iota
	CacheRefBlock
)

func (k CacheKind) String() string {
	switch k {
	case CacheL2:
		return "l2"
	case CacheRefBlock:
		return "refblock"
	}
	return "unknown"
}

// Hooks receives engine events. Every method is called synchronously from the goroutine doing
// the work, sometimes with engine locks held: implementations must be fast, must not block and
// must not call back into the Image. A nil Hooks in OpenOptions means NopHooks.
type Hooks interface {
	// ClustersAllocated reports n host clusters newly given refcount 1 for kind.
	ClustersAllocated(kind AllocKind, n uint64)
	// ClustersFreed reports n host clusters whose refcount dropped to 0.
	ClustersFreed(n uint64)
	// AllocationDone reports the wall time one allocation (of any number of clusters) took.
	AllocationDone(d time.Duration)
	// RefTableGrown reports that the reftable was moved to a larger copy of newClusters clusters.
	RefTableGrown(newClusters uint64)
	// CacheAccess reports one lookup in a metadata cache.
	CacheAccess(cache CacheKind, hit bool)
	// CacheEviction reports one entry evicted from a metadata cache.
	CacheEviction(cache CacheKind)
	// Flushed reports one Flush of the image and how long it took.
	Flushed(d time.Duration)
	// StateChanged reports the image's state after it changed (open, dirty bit set or
	// cleared, corruption found, L1 or reftable resized, host file grown).
	StateChanged(s State)
}

// State is a snapshot of gauges describing an open image.
type State struct {
	Dirty            bool
	Corrupt          bool
	L1Entries        uint64
	RefTableClusters uint64
	HostBytes        uint64
}

// NopHooks ignores every event.
type NopHooks struct{}

func (NopHooks) ClustersAllocated(AllocKind, uint64) {}
func (NopHooks) ClustersFreed(uint64)                {}
func (NopHooks) AllocationDone(time.Duration)        {}
func (NopHooks) RefTableGrown(uint64)                {}
func (NopHooks) CacheAccess(CacheKind, bool)         {}
func (NopHooks) CacheEviction(CacheKind)             {}
func (NopHooks) Flushed(time.Duration)               {}
func (NopHooks) StateChanged(State)                  {}
