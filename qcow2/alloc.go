// The cluster allocator: first-free hint, contiguous runs, self-describing refcount blocks, freeing.
package qcow2

import (
	"errors"
	"fmt"
	"time"
)

// clusterAllocator is what the rest of the engine asks of an allocation strategy. allocator
// is the one implementation; the interface keeps the test suite reusable for another one
// (per-goroutine preallocated runs, say).
type clusterAllocator interface {
	// allocMeta allocates n contiguous clusters with refcount 1.
	allocMeta(n ClusterCount, kind AllocKind) (hostCluster, error)
	// free decrements the refcounts of n clusters from c; best effort.
	free(c hostCluster, n ClusterCount, punch bool)
	// refcount returns a cluster's refcount.
	refcount(c hostCluster) (refcount, error)
	// flush makes all refcount changes durable.
	flush() error
}

var _ clusterAllocator = (*allocator)(nil)

// allocator owns the refcount structures of a writable image: the reftable (in memory), the
// refcount block cache, and the first-free hint. It exists only for writable images (nil
// otherwise, as in imago, whose allocation.rs is the seed of this design).
//
// It has no lock of its own: every call is made with the image's metadata lock held (see
// doc.go for why a second, nested mutex would buy nothing).
//
// The allocator never hands out a cluster whose refcount is not 0, and it checks every
// cluster it is about to return against the metadata it knows of (header, L1, reftable,
// snapshot table, active L2 tables and refcount blocks): a hit means the refcounts on disk
// are wrong, and the image is marked corrupt rather than overwriting live metadata.
//
// Errors: an allocation that fails part way may leak clusters (refcount 1, referenced by
// nothing), never corrupt the image; free is best effort and only logs what it cannot do.
type allocator struct {
	img *Image
	g   Geometry

	table         []refTableEntry
	tableOff      HostOffset
	tableClusters uint32
	tableDirty    map[refTableIndex]struct{}
	// blocks counts the clusters of the refcount blocks the table names, for overlap checks
	// (overlap.go isRefBlock); nil until first needed, then kept in step by setTableEntry.
	blocks *clusterRefs
	cache  *lru[hostCluster, *refBlock]

	// firstFree is a lower bound of the first cluster with refcount 0: every cluster below
	// it is in use. Allocation searches from here; freeing lowers it.
	firstFree hostCluster
	// end is the end of everything ever allocated or present in the file: clusters at or
	// past it have never been written and read back as zeros (no zero-filling needed).
	// Reserved clusters do not move it until they are handed out.
	end HostOffset
	// resv holds the clusters counted on disk ahead of use (alloc_reserve.go).
	resv reservation
	// grownFrom is the file's length before a reservation first extended it (0: not
	// extended since open or the last trimFile).
	grownFrom uint64
}

func newAllocator(img *Image, fileSize uint64, cacheEntries int) (*allocator, error) {
	t, err := loadRefTable(img.file, &img.hdr)
	if err != nil {
		return nil, err
	}
	a := &allocator{
		img:           img,
		g:             img.geo,
		table:         t,
		tableOff:      img.hdr.RefTableOffset,
		tableClusters: img.hdr.RefTableClusters,
		tableDirty:    map[refTableIndex]struct{}{},
		end:           HostOffset(fileSize),
		resv: reservation{
			set:      map[hostCluster]struct{}{},
			perBlock: map[refTableIndex]int{},
			batch:    minReserveBatch,
		},
	}
	a.cache = newLRU(CacheRefBlock, max(cacheEntries, minRefBlockCache), cacheBackend[hostCluster, *refBlock](refBlockBackend{img}), img.hooks, img.file.Sync)
	a.cache.afterWrite = a.writeRefTableDirty
	return a, nil
}

// minRefBlockCache: "must be at least 4 to cover all cases of refcount table growth" (QEMU's
// MIN_REFCOUNT_CACHE_SIZE).
const minRefBlockCache = 4

// allocMeta allocates n contiguous clusters, each with refcount 1, and reports them as kind.
//
// The search is first-fit from the first-free hint. Clusters not covered by any refcount block
// count as free, but before they can be counted a refcount block must exist for them; making
// one may take a cluster out of the very run we chose, so the search then starts over:
//
//	|AAAA|              chose 4 clusters; the second region has no refcount block yet
//	|AR  |AAAA|         the block went to the first free covered cluster: run broken
//	|AR  |AAAA|         search again: the run now starts after R and fits
//
// Each restart leaves one more cluster in use, so the loop ends (imago's allocation.rs argues
// the same convergence).
func (a *allocator) allocMeta(n ClusterCount, kind AllocKind) (hostCluster, error) {
	start := time.Now()
	defer func() { a.img.hooks.AllocationDone(time.Since(start)) }()
	if n == 0 {
		return 0, errors.New("qcow2: internal error: allocation of 0 clusters")
	}
	from := a.firstFree
	for tries := 0; ; tries++ {
		if tries > 1<<16 {
			return 0, fmt.Errorf("qcow2: internal error: allocation of %d clusters does not converge", n)
		}
		c, firstSeen, err := a.findFree(from, n)
		if err != nil {
			return 0, err
		}
		if from == a.firstFree && firstSeen > a.firstFree {
			a.firstFree = firstSeen
		}
		created := false
		last := c.Add(n - 1)
		for i := c.refTableIndex(a.g); i <= last.refTableIndex(a.g); i++ {
			_, _, ok, err := a.refblockFor(i)
			if err != nil {
				return 0, err
			}
			if !ok {
				if err := a.createRefBlock(i); err != nil {
					return 0, err
				}
				created = true
				break
			}
		}
		if created {
			from = min(c, a.firstFree)
			continue
		}
		if a.img.accurateRefcounts() {
			// Counted on disk before anything can point at them: no L2 table has to wait
			// for a refcount flush (flush.go).
			if err := a.ensureDurable(c, n); err != nil {
				return 0, err
			}
		}
		if err := a.claim(c, n); err != nil {
			return 0, err
		}
		a.img.hooks.ClustersAllocated(kind, uint64(n))
		return c, nil
	}
}

// claim sets the refcounts of [c, c+n), all 0 and covered by refcount blocks, to 1. A reserved
// cluster leaves the reservation; its block stays as it is, the disk holding 1 already.
func (a *allocator) claim(c hostCluster, n ClusterCount) error {
	off := c.Offset(a.g)
	size := a.g.Bytes(n)
	if what := a.img.overlapsAny(off, size, metaNone, 0); what != "" {
		return a.img.markCorrupt(corruptf("allocator: clusters %d..%d have refcount 0 but overlap the %s", c, c.Add(n-1), what))
	}
	for i := ClusterCount(0); i < n; i++ {
		cl := c.Add(i)
		if rc, err := a.refcount(cl); err != nil {
			return err
		} else if rc != 0 {
			return a.img.markCorrupt(corruptf("allocator: about to hand out cluster %d with refcount %d", cl, rc))
		}
		if a.isReserved(cl) {
			// Block first, then out of the set (see unreserve).
			rb, _, _, err := a.refblockFor(cl.refTableIndex(a.g))
			if err != nil {
				return err
			}
			a.takeReserved(cl)
			a.view(rb).Set(cl.refBlockIndex(a.g), 1)
			continue
		}
		if err := a.setRefcount(cl, 1); err != nil {
			return err
		}
	}
	if a.firstFree >= c && a.firstFree < c.Add(n) {
		a.firstFree = c.Add(n)
	}
	if end := off.Add(size); end > a.end {
		a.end = end
	}
	return nil
}

// findFree returns the first run of n clusters at or after from whose refcounts are 0, and
// the first free cluster it saw (to advance the hint).
func (a *allocator) findFree(from hostCluster, n ClusterCount) (run, firstSeen hostCluster, err error) {
	perBlock := a.g.refBlockEntries()
	run, firstSeen = from, ^hostCluster(0)
	var have ClusterCount
	c := from
	for have < n {
		if uint64(c)+uint64(n) > maxHostOffset>>a.g.ClusterBits {
			return 0, 0, fmt.Errorf("%w: the image file cannot grow past %d bytes", ErrNoSpace, uint64(maxHostOffset))
		}
		i := c.refTableIndex(a.g)
		rb, _, ok, err := a.refblockFor(i)
		if err != nil {
			return 0, 0, err
		}
		next := (i + 1).firstCluster(a.g)
		if !ok {
			// No refcount block: every cluster it would count is free.
			firstSeen = min(firstSeen, c)
			have += ClusterCount(next - c)
			c = next
			continue
		}
		v := a.view(rb)
		for j := c.refBlockIndex(a.g); uint64(j) < perBlock && have < n; j++ {
			if v.Get(j) == 0 {
				firstSeen = min(firstSeen, c)
				have++
			} else {
				run, have = c+1, 0
			}
			c++
		}
	}
	return run, firstSeen, nil
}

// createRefBlock makes a refcount block for reftable index i, which has none.
//
// It goes into a free cluster that an existing block already counts, if there is one before
// the region it will cover. Otherwise it describes itself: it sits in the first cluster of
// its own region and counts itself there.
//
//	region i:  |R . . . . . . .|      R = the new block, its own refcount (index 0) is 1
//
// Past the end of the reftable, the reftable grows first (growRefTable), which lays out
// blocks for the new region itself.
func (a *allocator) createRefBlock(i refTableIndex) error {
	if uint64(i) >= uint64(len(a.table)) {
		return a.growRefTable(i)
	}
	regionStart := i.firstCluster(a.g)
	rb := &refBlock{data: make([]byte, a.g.ClusterSize()), idx: i, bound: true}
	place, found, err := a.findFreeCovered(a.firstFree, regionStart)
	if err != nil {
		return err
	}
	if found {
		if err := a.claim(place, 1); err != nil {
			return err
		}
	} else {
		place = regionStart
		if what := a.img.overlapsAny(place.Offset(a.g), a.g.ClusterSize(), metaNone, 0); what != "" {
			return a.img.markCorrupt(corruptf("allocator: uncounted cluster %d overlaps the %s", place, what))
		}
		a.view(rb).Set(0, 1)
		if end := place.Add(1).Offset(a.g); end > a.end {
			a.end = end
		}
	}
	a.cache.insertNew(place, rb)
	a.setTableEntry(i, refTableEntry(place.Offset(a.g)))
	a.img.hooks.ClustersAllocated(AllocRefBlock, 1)
	return nil
}

// findFreeCovered returns the first cluster in [from, limit) that an existing refcount block
// counts with refcount 0.
func (a *allocator) findFreeCovered(from, limit hostCluster) (hostCluster, bool, error) {
	perBlock := a.g.refBlockEntries()
	for c := from; c < limit; {
		i := c.refTableIndex(a.g)
		rb, _, ok, err := a.refblockFor(i)
		if err != nil {
			return 0, false, err
		}
		if !ok {
			c = (i + 1).firstCluster(a.g)
			continue
		}
		v := a.view(rb)
		for j := c.refBlockIndex(a.g); uint64(j) < perBlock && c < limit; j++ {
			if v.Get(j) == 0 {
				return c, true, nil
			}
			c++
		}
	}
	return 0, false, nil
}

// free decrements the refcounts of [c, c+n). Clusters reaching 0 lower the first-free hint,
// are dropped from the metadata caches, and, when punch is set, are deallocated in the host
// file (only for clusters whose contents the guest asked to discard; a cluster freed by
// copy-on-write keeps its bytes until the L2 entry pointing away from it is on disk).
//
// Best effort: a failure is logged and leaks the clusters. A refcount that is already 0 means
// a mapped cluster was not counted: the image is marked corrupt.
func (a *allocator) free(c hostCluster, n ClusterCount, punch bool) {
	var freed uint64
	var runStart hostCluster
	var runLen ClusterCount
	flushRun := func() {
		if punch && runLen > 0 {
			a.img.punchHost(a.img.file, runStart.Offset(a.g), a.g.Bytes(runLen))
		}
		runLen = 0
	}
	for k := ClusterCount(0); k < n; k++ {
		cl := c.Add(k)
		rc, err := a.refcount(cl)
		if err != nil {
			a.retryFree(cl, punch, err)
			continue
		}
		if rc == 0 {
			_ = a.img.markCorrupt(corruptf("freeing cluster %d whose refcount is already 0", cl))
			continue
		}
		if err := a.setRefcount(cl, rc-1); err != nil {
			a.retryFree(cl, punch, err)
			continue
		}
		if rc-1 != 0 {
			continue
		}
		freed++
		a.img.compressedCursorFreed(cl)
		a.firstFree = min(a.firstFree, cl)
		a.img.l2.drop(cl)
		if cl != runStart.Add(runLen) {
			flushRun()
			runStart = cl
		}
		runLen++
	}
	flushRun()
	if freed > 0 {
		a.img.hooks.ClustersFreed(freed)
	}
}

// retryFree puts back a free whose refcount could not be read or written (a transient I/O
// error must not leak the cluster): the next batch of frees tries again. A corrupt refcount
// structure is not retried: the cluster leaks.
func (a *allocator) retryFree(c hostCluster, punch bool, err error) {
	if isCorrupt(err) {
		a.img.log.Warn("qcow2: leaking cluster", "cluster", uint64(c), "err", err)
		return
	}
	a.img.log.Warn("qcow2: cannot free cluster yet; will retry", "cluster", uint64(c), "err", err)
	a.img.deferred = append(a.img.deferred, deferredFree{c: c, n: 1, punch: punch})
}
