// Batch reservation: refcounts raised and synced for a run of free clusters ahead of use, so
// that handing one out needs no sync.
package qcow2

import "fmt"

// The allocator keeps every cluster it hands out durably counted before anything can point at
// it, without a sync per allocation: it reserves clusters in batches (docs/allocation.md).
//
// A reserved cluster has refcount 1 on disk (written and synced) but 0 in memory: to the
// allocator it is free, so first-fit placement is exactly what it would be without reservations
// (the host layout stays qemu-img's), and every reader of in-memory refcounts (the metadata
// preallocation heuristic, the shrink of a resize, Check on the closed image) sees what it would
// see without them. Two places translate: a refcount block written to disk carries 1 for each
// of its reserved clusters (encodeReserved), and one read from disk gets 0 for them
// (decodeReserved).
//
//	handing out:   reserved -> refcount 1 in memory too (no write: the disk already says 1)
//	reserving:     free, not reserved -> reserved: block dirty, file extended, ONE flush
//	releasing:     reserved -> free: block dirty (written at the next refcount flush)
//
// A crash leaves the unused rest of a batch with refcount 1 and no reference: leaked clusters,
// which check -r leaks reclaims. Close releases the rest, so a clean close leaks nothing.
type reservation struct {
	set map[hostCluster]struct{}
	// perBlock counts the reserved clusters each reftable index covers.
	perBlock map[refTableIndex]int
	// batch is the number of clusters the next reservation takes; it doubles with every
	// reservation up to maxReserveBatch.
	batch ClusterCount
}

const (
	// minReserveBatch is the first batch of an open image: a small workload leaks little.
	minReserveBatch ClusterCount = 16
	// maxReserveBytes bounds a batch in bytes (256 MiB: 4096 clusters of 64 KiB).
	maxReserveBytes = 256 << 20
	// maxReserveBatch bounds a batch in clusters, whatever the cluster size.
	maxReserveBatch ClusterCount = 4096
)

func (a *allocator) maxBatch() ClusterCount {
	return max(minReserveBatch, min(maxReserveBatch, ClusterCount(maxReserveBytes/a.g.ClusterSize())))
}

// isReserved reports whether c is reserved (counted on disk, free in memory).
func (a *allocator) isReserved(c hostCluster) bool {
	_, ok := a.resv.set[c]
	return ok
}

// takeReserved takes c out of the reservation and reports whether it was in it. When it was,
// the caller sets its in-memory refcount to 1 without dirtying the block: the disk holds 1.
func (a *allocator) takeReserved(c hostCluster) bool {
	if _, ok := a.resv.set[c]; !ok {
		return false
	}
	delete(a.resv.set, c)
	i := c.refTableIndex(a.g)
	if a.resv.perBlock[i]--; a.resv.perBlock[i] == 0 {
		delete(a.resv.perBlock, i)
	}
	return true
}

// ensureDurable makes the refcounts of [c, c+n), about to be claimed, durable before the
// clusters are handed out: when one of them is not reserved yet, it reserves a batch from c on
// (every free cluster the existing refcount blocks count, in address order, so the batch is
// what first-fit would hand out next) and flushes the refcount cache once. Called only with
// accurate refcounts (lazy refcounts need no ordering), with [c, c+n) free and covered by
// refcount blocks.
func (a *allocator) ensureDurable(c hostCluster, n ClusterCount) error {
	all := true
	for k := ClusterCount(0); k < n; k++ {
		if !a.isReserved(c.Add(k)) {
			all = false
			break
		}
	}
	if all {
		return nil
	}
	want := max(n, a.resv.batch)
	if a.img.opts.WriteThrough {
		// Every write request ends in a flush anyway: a batch would save no sync, and a
		// crash right after an acknowledged write would leak its unused rest.
		want = n
	}
	// Scan a bounded window: the run itself, then free clusters up to the first region no
	// refcount block covers.
	limit := c.Add(max(n, 4*want))
	var added []hostCluster
	var lastEnd HostOffset
	for cl := c; cl < limit && ClusterCount(len(added)) < want; {
		i := cl.refTableIndex(a.g)
		rb, key, ok, err := a.refblockFor(i)
		if err != nil {
			a.unreserve(added)
			return err
		}
		if !ok {
			if cl < c.Add(n) {
				a.unreserve(added)
				return fmt.Errorf("qcow2: internal error: reserving cluster %d, which no refcount block counts", cl)
			}
			break
		}
		v := a.view(rb)
		next := (i + 1).firstCluster(a.g)
		dirty := false
		for ; cl < next && cl < limit && ClusterCount(len(added)) < want; cl++ {
			if v.Get(cl.refBlockIndex(a.g)) != 0 || a.isReserved(cl) {
				continue
			}
			if what := a.img.overlapsAny(cl.Offset(a.g), a.g.ClusterSize(), metaNone, 0); what != "" {
				a.unreserve(added)
				return a.img.markCorrupt(corruptf("allocator: cluster %d has refcount 0 but overlaps the %s", cl, what))
			}
			a.resv.set[cl] = struct{}{}
			a.resv.perBlock[i]++
			added = append(added, cl)
			lastEnd = cl.Add(1).Offset(a.g)
			dirty = true
		}
		if dirty {
			a.cache.markDirty(key)
		}
	}
	for k := ClusterCount(0); k < n; k++ {
		if !a.isReserved(c.Add(k)) {
			a.unreserve(added)
			return fmt.Errorf("qcow2: internal error: cluster %d could not be reserved", c.Add(k))
		}
	}
	// An L2 entry may point into the batch before its data is written: the file must already
	// reach that far on disk (a cluster past the end of the file is corruption to Open). The
	// extension is sparse; the flush below syncs it together with the refcounts.
	if size, err := a.img.file.Size(); err != nil {
		a.unreserve(added)
		return err
	} else if uint64(lastEnd) > uint64(size) {
		if a.grownFrom == 0 {
			a.grownFrom = uint64(size)
		}
		if err := a.img.file.Truncate(int64(lastEnd)); err != nil {
			a.unreserve(added)
			return fmt.Errorf("qcow2: extend the image file for allocation: %w", err)
		}
	}
	if err := a.cache.flushAll(); err != nil {
		// The blocks may or may not say 1 on disk now: leaked at worst, never used.
		a.unreserve(added)
		return err
	}
	a.resv.batch = min(a.maxBatch(), a.resv.batch*2)
	return nil
}

// unreserve drops clusters from the reservation (they stay free in memory; their blocks are
// written with 0 at the next refcount flush).
func (a *allocator) unreserve(cs []hostCluster) {
	for _, c := range cs {
		if !a.isReserved(c) {
			continue
		}
		// The block first: loading it reads the reserved cluster's 1 from disk, which
		// decodeReserved turns into 0 only while the cluster is still in the set.
		_, key, ok, err := a.refblockFor(c.refTableIndex(a.g))
		a.takeReserved(c)
		if err == nil && ok {
			a.cache.markDirty(key)
		}
	}
}

// releaseReservation gives back every reserved cluster: their refcounts return to 0 on disk
// with the next refcount flush. Close and Resize call it, so that a clean close leaks nothing
// and a shrink sees the image's real end.
func (a *allocator) releaseReservation() {
	if len(a.resv.set) == 0 {
		return
	}
	cs := make([]hostCluster, 0, len(a.resv.set))
	for c := range a.resv.set {
		cs = append(cs, c)
	}
	a.unreserve(cs)
	// Unreserve marks a block dirty only when it can load it; one it cannot (an I/O error) is
	// not written, and its clusters leak.
	a.resv.batch = minReserveBatch
}

// encodeReserved returns the bytes to write for refcount block rb: its in-memory counts, with 1
// for each reserved cluster it covers.
func (a *allocator) encodeReserved(rb *refBlock) []byte {
	if !rb.bound || a.resv.perBlock[rb.idx] == 0 {
		return rb.data
	}
	out := append([]byte(nil), rb.data...)
	v := RefBlock{Data: out, Order: a.g.RefcountOrder}
	for c := range a.resv.set {
		if c.refTableIndex(a.g) == rb.idx {
			v.Set(c.refBlockIndex(a.g), 1)
		}
	}
	return out
}

// decodeReserved binds a block read from disk to its reftable index and gives its reserved
// clusters their in-memory refcount, 0.
func (a *allocator) decodeReserved(rb *refBlock, i refTableIndex) {
	rb.idx, rb.bound = i, true
	if a.resv.perBlock[i] == 0 {
		return
	}
	v := a.view(rb)
	for c := range a.resv.set {
		if c.refTableIndex(a.g) == i {
			v.Set(c.refBlockIndex(a.g), 0)
		}
	}
}
