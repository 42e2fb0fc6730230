// Hooks: the engine reports allocations, frees, reftable growth, cache use, flushes and state
// changes (dirty with lazy refcounts) through Hooks.
package qcow2

import (
	"sync"
	"testing"
	"time"
)

type countingHooks struct {
	mu        sync.Mutex
	alloc     map[AllocKind]uint64
	freed     uint64
	flushes   int
	accesses  int
	grown     int
	states    []State
	evictions int
}

func (h *countingHooks) ClustersAllocated(k AllocKind, n uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.alloc == nil {
		h.alloc = map[AllocKind]uint64{}
	}
	h.alloc[k] += n
}

func (h *countingHooks) ClustersFreed(n uint64) { h.mu.Lock(); h.freed += n; h.mu.Unlock() }

func (h *countingHooks) AllocationDone(time.Duration) {}

func (h *countingHooks) RefTableGrown(uint64) { h.mu.Lock(); h.grown++; h.mu.Unlock() }

func (h *countingHooks) CacheAccess(CacheKind, bool) { h.mu.Lock(); h.accesses++; h.mu.Unlock() }

func (h *countingHooks) CacheEviction(CacheKind) { h.mu.Lock(); h.evictions++; h.mu.Unlock() }

func (h *countingHooks) Flushed(time.Duration) { h.mu.Lock(); h.flushes++; h.mu.Unlock() }

func (h *countingHooks) StateChanged(s State) {
	h.mu.Lock()
	h.states = append(h.states, s)
	h.mu.Unlock()
}

// TestHooksReportEngineEvents: hooks see allocations by kind, frees, flushes, cache traffic,
// reftable growth and state changes; with lazy refcounts the dirty bit is on disk before the
// first write and cleared by a clean close.
func TestHooksReportEngineEvents(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "h.qcow2", "cluster_size=512,lazy_refcounts=on", "16M")
	h := &countingHooks{}
	img := openTestImage(t, p, OpenOptions{Hooks: h, L2CacheBytes: 2048})
	r := engOpenRaw(t, p)
	if r.headerIncompat()&incompatDirty != 0 {
		t.Fatal("dirty before any write")
	}
	engWrite(t, img, 0, engPattern(10<<20, 1))
	if r.headerIncompat()&incompatDirty == 0 {
		t.Fatal("dirty bit not on disk after a lazy write")
	}
	if err := img.Discard(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if r.headerIncompat()&incompatDirty != 0 {
		t.Fatal("dirty bit still set after close")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.alloc[AllocData] < 10<<20/512 || h.alloc[AllocL2] == 0 || h.alloc[AllocRefBlock] == 0 {
		t.Errorf("allocations: %v", h.alloc)
	}
	if h.freed < 1<<20/512 || h.flushes == 0 || h.accesses == 0 || h.evictions == 0 || h.grown == 0 {
		t.Errorf("freed %d flushes %d accesses %d evictions %d grown %d", h.freed, h.flushes, h.accesses, h.evictions, h.grown)
	}
	sawDirty := false
	for _, s := range h.states {
		sawDirty = sawDirty || s.Dirty
	}
	if !sawDirty || h.states[len(h.states)-1].Dirty {
		t.Errorf("states: dirty seen %v, last %+v", sawDirty, h.states[len(h.states)-1])
	}
}
