// Generic LRU cache of metadata tables, with dirty tracking and declared flush dependencies.
package qcow2

import (
	"cmp"
	"slices"
)

// cacheBackend loads a table from disk and writes it back.
type cacheBackend[K cmp.Ordered, V any] interface {
	load(k K) (V, error)
	flush(k K, v V) error
}

// flushTarget is what one cache can depend on: another cache, whose dirty entries must all be
// on disk (written and synced) before any entry of the dependent cache is written.
type flushTarget interface {
	flushAll() error
	dependency() flushTarget
	clearDependency() error
}

type cacheEntry[K cmp.Ordered, V any] struct {
	key   K
	val   V
	dirty bool
	// weight is what the entry counts against the capacity (lru.weigh), as last measured.
	weight int
	// used is set by every lookup and cleared by cleanUnused.
	used       bool
	prev, next *cacheEntry[K, V]
}

// lru is a least-recently-used cache of tables keyed by their host cluster, modelled on QEMU's
// qcow2-cache.c and imago's async_lru_cache.rs.
//
// Flush ordering is declared, not implied: depends names a cache that must be on disk before
// any of my dirty entries is written (QEMU's qcow2_cache_set_dependency; no cache declares one
// since allocation reserves durable batches, flush.go), and beforeWrite
// says what must happen before one particular entry is written (the L2 cache: an fsync of the
// data file when the table maps data not yet durable, a per-table qcow2_cache_depends_on_flush).
// Writing one entry honours both first.
//
// Entries are never evicted behind a caller's back: get and insert only add, and trim, called
// by the image at points where no table pointer is held, evicts down to the capacity. That is
// simpler than pinning and makes "a table I hold was evicted and my change was lost"
// impossible. The cache is not safe for concurrent use; the image's metadata lock guards it.
type lru[K cmp.Ordered, V any] struct {
	kind    CacheKind
	hooks   Hooks
	backend cacheBackend[K, V]
	// capacity bounds the sum of the entries' weights.
	capacity int
	// size is the sum of the entries' weights.
	size  int
	items map[K]*cacheEntry[K, V]
	// root is the sentinel of the recency list: root.next is the most recently used entry.
	root   cacheEntry[K, V]
	ndirty int

	// depends is the cache that must be flushed before any dirty entry here is written.
	depends flushTarget
	// beforeWrite, when set, runs before a dirty entry is written: the L2 cache syncs the
	// data file there when the table maps data that must be durable first (flush.go).
	beforeWrite func(k K, v V) error
	// sync makes this cache's own writes durable (an fsync of the image file).
	sync func() error
	// afterWrite runs after all dirty entries are written and synced, before the final sync of
	// flushAll (the refcount cache writes the reftable entries that point at new refblocks);
	// it reports whether it wrote anything.
	afterWrite func() (bool, error)
	// evicted, when set, receives the value of an entry trim or cleanUnused let go: nothing
	// refers to it any more (no table pointer is held across those points), so the L2 cache
	// reuses its memory for the next table it loads.
	evicted func(V)
	// weigh, when set, is an entry's weight (the L2 cache: the slices a table holds in
	// memory); otherwise every entry weighs 1.
	weigh func(V) int
	// countsOwnAccess is set when the user of the cache reports hits and misses itself (the
	// L2 cache counts per slice, l2load.go); get then reports none.
	countsOwnAccess bool
	// flushing guards against re-entering flushAll through a dependency cycle.
	flushing bool
	// unsynced is set when an entry was written since the last sync.
	unsynced bool
}

func newLRU[K cmp.Ordered, V any](kind CacheKind, capacity int, b cacheBackend[K, V], hooks Hooks, sync func() error) *lru[K, V] {
	c := &lru[K, V]{kind: kind, hooks: hooks, backend: b, capacity: capacity, items: make(map[K]*cacheEntry[K, V]), sync: sync}
	c.root.next, c.root.prev = &c.root, &c.root
	return c
}

func (c *lru[K, V]) unlink(e *cacheEntry[K, V]) {
	e.prev.next, e.next.prev = e.next, e.prev
}

func (c *lru[K, V]) pushFront(e *cacheEntry[K, V]) {
	e.next, e.prev = c.root.next, &c.root
	c.root.next.prev = e
	c.root.next = e
}

// get returns the table for k, loading it on a miss.
func (c *lru[K, V]) get(k K) (V, error) {
	if e, ok := c.items[k]; ok {
		if !c.countsOwnAccess {
			c.hooks.CacheAccess(c.kind, true)
		}
		e.used = true
		c.unlink(e)
		c.pushFront(e)
		return e.val, nil
	}
	if !c.countsOwnAccess {
		c.hooks.CacheAccess(c.kind, false)
	}
	v, err := c.backend.load(k)
	if err != nil {
		var zero V
		return zero, err
	}
	e := &cacheEntry[K, V]{key: k, val: v, used: true}
	c.items[k] = e
	c.pushFront(e)
	c.setWeight(e)
	return v, nil
}

// setWeight measures e's weight again and updates the cache's size.
func (c *lru[K, V]) setWeight(e *cacheEntry[K, V]) {
	w := 1
	if c.weigh != nil {
		w = c.weigh(e.val)
	}
	c.size += w - e.weight
	e.weight = w
}

// reweigh measures the weight of k's entry again, after its value grew or shrank in memory.
func (c *lru[K, V]) reweigh(k K) {
	if e, ok := c.items[k]; ok {
		c.setWeight(e)
	}
}

// remove takes e out of the cache (the list, the map and the size).
func (c *lru[K, V]) remove(e *cacheEntry[K, V]) {
	c.unlink(e)
	delete(c.items, e.key)
	c.size -= e.weight
}

// occupancy is the sum of the entries' weights and the capacity, in the cache's unit.
func (c *lru[K, V]) occupancy() (int, int) { return c.size, c.capacity }

// contains reports whether k is cached.
func (c *lru[K, V]) contains(k K) bool {
	_, ok := c.items[k]
	return ok
}

// insertNew adds a table that exists only in memory (a new table), dirty.
func (c *lru[K, V]) insertNew(k K, v V) {
	if old, ok := c.items[k]; ok {
		if old.dirty {
			c.ndirty--
		}
		c.remove(old)
	}
	e := &cacheEntry[K, V]{key: k, val: v, dirty: true, used: true}
	c.ndirty++
	c.items[k] = e
	c.pushFront(e)
	c.setWeight(e)
}

// markDirty records that the cached table for k was changed in memory.
func (c *lru[K, V]) markDirty(k K) {
	e, ok := c.items[k]
	if !ok {
		panic("qcow2: markDirty of a table that is not cached")
	}
	if !e.dirty {
		e.dirty = true
		c.ndirty++
	}
	c.setWeight(e)
}

// drop forgets k without writing it (the table's cluster was freed).
func (c *lru[K, V]) drop(k K) {
	if e, ok := c.items[k]; ok {
		if e.dirty {
			c.ndirty--
		}
		c.remove(e)
	}
}

func (c *lru[K, V]) dependency() flushTarget { return c.depends }

// clearDependency flushes what c depends on and forgets the dependency.
func (c *lru[K, V]) clearDependency() error {
	if c.depends == nil {
		return nil
	}
	dep := c.depends
	if err := dep.flushAll(); err != nil {
		return err
	}
	c.depends = nil
	return nil
}

// writeEntry writes one dirty entry after honouring the declared order.
func (c *lru[K, V]) writeEntry(e *cacheEntry[K, V]) error {
	if err := c.clearDependency(); err != nil {
		return err
	}
	if c.beforeWrite != nil {
		if err := c.beforeWrite(e.key, e.val); err != nil {
			return err
		}
	}
	if err := c.backend.flush(e.key, e.val); err != nil {
		return err
	}
	e.dirty = false
	c.ndirty--
	c.unsynced = true
	return nil
}

// writeAll writes every dirty entry, in key (host offset) order, without the final sync.
func (c *lru[K, V]) writeAll() error {
	if c.ndirty == 0 {
		return nil
	}
	dirty := make([]*cacheEntry[K, V], 0, c.ndirty)
	for _, e := range c.items {
		if e.dirty {
			dirty = append(dirty, e)
		}
	}
	slices.SortFunc(dirty, func(a, b *cacheEntry[K, V]) int { return cmp.Compare(a.key, b.key) })
	for _, e := range dirty {
		if err := c.writeEntry(e); err != nil {
			return err
		}
	}
	return nil
}

// flushAll writes every dirty entry, runs afterWrite, and syncs: afterwards everything the
// cache holds is durable.
func (c *lru[K, V]) flushAll() error {
	if c.flushing {
		return nil
	}
	c.flushing = true
	defer func() { c.flushing = false }()
	if err := c.writeAll(); err != nil {
		return err
	}
	if c.afterWrite != nil {
		// Entries written (now or by an earlier eviction) must be durable before whatever
		// afterWrite publishes points at them.
		if c.unsynced {
			if err := c.sync(); err != nil {
				return err
			}
			c.unsynced = false
		}
		wrote, err := c.afterWrite()
		if err != nil {
			return err
		}
		c.unsynced = c.unsynced || wrote
	}
	// Only what this cache wrote needs the barrier: a dependent cache relies on these writes
	// being durable, and they are once no write is left unsynced.
	if c.unsynced {
		if err := c.sync(); err != nil {
			return err
		}
		c.unsynced = false
	}
	return nil
}

// clean reports whether nothing is dirty and every write is synced: flushAll would do nothing.
func (c *lru[K, V]) clean() bool { return c.ndirty == 0 && !c.unsynced }

// trim evicts least recently used entries until their weights sum to at most capacity. A dirty entry is
// written (after its dependencies) before it goes. When writing fails the entry stays and the
// error is returned; the cache is then over capacity until a later trim succeeds.
func (c *lru[K, V]) trim() error {
	for c.size > c.capacity && len(c.items) > 0 {
		e := c.root.prev
		if e.dirty {
			if err := c.writeEntry(e); err != nil {
				return err
			}
		}
		c.remove(e)
		c.hooks.CacheEviction(c.kind)
		if c.evicted != nil {
			c.evicted(e.val)
		}
	}
	return nil
}

// cleanUnused drops the clean entries no lookup used since the previous call, and starts a new
// period for the others (QEMU's qcow2_cache_clean_unused, run every cache-clean-interval).
func (c *lru[K, V]) cleanUnused() {
	for e := c.root.next; e != &c.root; {
		next := e.next
		if !e.used && !e.dirty {
			c.remove(e)
			c.hooks.CacheEviction(c.kind)
			if c.evicted != nil {
				c.evicted(e.val)
			}
		}
		e.used = false
		e = next
	}
}
