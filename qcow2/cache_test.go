// The metadata cache (cache.go): declared flush order, eviction of the least recently used
// entry, and no dirty table ever lost to an eviction or a failed write.
package qcow2

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"
)

// recBackend is a cacheBackend over a map that logs every load, write and sync it sees into a
// log shared by the caches of one test, so a test can read the order they happened in.
type recBackend struct {
	name    string
	log     *[]string
	disk    map[int]string
	failFor map[int]error
}

func (b *recBackend) load(k int) (string, error) {
	*b.log = append(*b.log, fmt.Sprintf("%s load %d", b.name, k))
	return b.disk[k], nil
}

func (b *recBackend) flush(k int, v string) error {
	if err := b.failFor[k]; err != nil {
		return err
	}
	*b.log = append(*b.log, fmt.Sprintf("%s write %d=%s", b.name, k, v))
	b.disk[k] = v
	return nil
}

func (b *recBackend) sync() error {
	*b.log = append(*b.log, b.name+" sync")
	return nil
}

func newRecCache(name string, log *[]string, capacity int) (*lru[int, string], *recBackend) {
	b := &recBackend{name: name, log: log, disk: map[int]string{}, failFor: map[int]error{}}
	return newLRU[int, string](CacheL2, capacity, b, NopHooks{}, b.sync), b
}

// TestCacheFlushWritesDependencyFirstThenKeyOrder: a cache that depends on another writes
// nothing before the other's dirty entries are written and synced; its own entries go out in
// host-offset order, then one sync; the dependency is then forgotten.
func TestCacheFlushWritesDependencyFirstThenKeyOrder(t *testing.T) {
	var log []string
	refs, _ := newRecCache("ref", &log, 8)
	l2, _ := newRecCache("l2", &log, 8)
	refs.insertNew(7, "r7")
	l2.insertNew(30, "a")
	l2.insertNew(10, "b")
	l2.insertNew(20, "c")
	l2.depends = refs
	if err := l2.flushAll(); err != nil {
		t.Fatal(err)
	}
	want := []string{"ref write 7=r7", "ref sync", "l2 write 10=b", "l2 write 20=c", "l2 write 30=a", "l2 sync"}
	if !slices.Equal(log, want) {
		t.Fatalf("flush order:\n got %q\nwant %q", log, want)
	}
	if l2.depends != nil || !l2.clean() || !refs.clean() {
		t.Fatalf("after flushAll: dependency %v, l2 clean %v, refs clean %v", l2.depends, l2.clean(), refs.clean())
	}
	log = log[:0]
	if err := l2.flushAll(); err != nil || len(log) != 0 {
		t.Fatalf("a flush of a clean cache did %q (err %v), want nothing", log, err)
	}
}

// TestCacheTrimEvictsLeastRecentlyUsed: over capacity, trim lets go of the entry used least
// recently, writing it first (after beforeWrite) when it is dirty, and keeps the others.
func TestCacheTrimEvictsLeastRecentlyUsed(t *testing.T) {
	var log []string
	c, b := newRecCache("l2", &log, 2)
	b.disk[1], b.disk[2] = "one", "two"
	var evicted []string
	c.evicted = func(v string) { evicted = append(evicted, v) }
	c.beforeWrite = func(k int, _ string) error {
		log = append(log, fmt.Sprintf("data sync before %d", k))
		return nil
	}
	for _, k := range []int{1, 2} {
		if _, err := c.get(k); err != nil {
			t.Fatal(err)
		}
	}
	c.insertNew(3, "three") // 1 is now the least recently used, then 2
	c.markDirty(1)
	if _, err := c.get(2); err != nil { // 2 used again: 1 is the one to go
		t.Fatal(err)
	}
	log = log[:0]
	if err := c.trim(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"data sync before 1", "l2 write 1=one"}; !slices.Equal(log, want) {
		t.Fatalf("trim did %q, want %q", log, want)
	}
	if !slices.Equal(evicted, []string{"one"}) || c.contains(1) || !c.contains(2) || !c.contains(3) {
		t.Fatalf("evicted %q; cached 1 %v, 2 %v, 3 %v", evicted, c.contains(1), c.contains(2), c.contains(3))
	}
	if size, capacity := c.occupancy(); size != 2 || capacity != 2 {
		t.Fatalf("occupancy %d/%d after trim, want 2/2", size, capacity)
	}
}

// TestCacheFailedWriteKeepsDirtyEntry: when writing an entry fails, neither trim nor flushAll
// drops it: it stays cached and dirty (over capacity if need be), and a later flush after the
// failure passes writes it.
func TestCacheFailedWriteKeepsDirtyEntry(t *testing.T) {
	var log []string
	c, b := newRecCache("l2", &log, 1)
	c.insertNew(1, "new")
	c.insertNew(2, "newer")
	b.failFor[1] = syscall.EIO
	if err := c.trim(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("trim with a failing write: %v, want EIO", err)
	}
	if !c.contains(1) || !c.contains(2) || c.clean() {
		t.Fatalf("after the failed eviction: cached 1 %v, 2 %v, clean %v", c.contains(1), c.contains(2), c.clean())
	}
	if err := c.flushAll(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("flushAll with a failing write: %v, want EIO", err)
	}
	delete(b.failFor, 1)
	if err := c.flushAll(); err != nil {
		t.Fatal(err)
	}
	if b.disk[1] != "new" || b.disk[2] != "newer" || !c.clean() {
		t.Fatalf("after the retry: disk %v, clean %v", b.disk, c.clean())
	}
}

// TestCacheCleanUnusedKeepsDirtyEntries: cleanUnused (QEMU's cache-clean-interval) drops the
// clean entries no lookup used in the last period, never a dirty one, and starts a new period.
func TestCacheCleanUnusedKeepsDirtyEntries(t *testing.T) {
	var log []string
	c, b := newRecCache("l2", &log, 8)
	b.disk[1], b.disk[2] = "one", "two"
	for _, k := range []int{1, 2} {
		if _, err := c.get(k); err != nil {
			t.Fatal(err)
		}
	}
	c.insertNew(3, "three")
	c.cleanUnused() // every entry was used in this period: all stay
	if !c.contains(1) || !c.contains(2) || !c.contains(3) {
		t.Fatal("cleanUnused dropped an entry used in the period")
	}
	if _, err := c.get(2); err != nil {
		t.Fatal(err)
	}
	c.cleanUnused() // 1 unused and clean: dropped; 3 unused but dirty: kept
	if c.contains(1) || !c.contains(2) || !c.contains(3) {
		t.Fatalf("after the second period: cached 1 %v, 2 %v, 3 %v; want 2 and 3", c.contains(1), c.contains(2), c.contains(3))
	}
}
