// Flush: the one place that states the order in which metadata reaches the disk, and its barriers.
package qcow2

import (
	"fmt"
	"time"
)

// The write order, and why each barrier (fsync) is where it is. QEMU's qcow2-cache.c rules,
// which this follows: a cache entry is written only after the cache it depends on has been
// written *and* flushed (qcow2_cache_flush_dependency), and "depends on flush" means an fsync
// must precede writing any entry (qcow2_cache_depends_on_flush).
//
//   - Allocating: refcount block (count +1) -> fsync, for a whole batch of clusters at once
//     (alloc_reserve.go: a reservation raises the counts of the next free clusters first-fit
//     would hand out, extends the file over them, and syncs once); clusters are then handed
//     out of the batch with no sync. An L2 entry may only ever point at a cluster that is
//     counted on disk, so no L2 table waits for the refcount cache: there is no L2 ->
//     refcount dependency left, and an eviction writes the table and goes on. A crash leaks
//     the unused rest of the batch (refcount 1, no reference), which check -r leaks
//     reclaims; Close gives it back.
//   - Data before the L2 entry that maps it, only where it matters. Without a FLUSH the guest
//     has no durability promise: after a crash an unflushed write may read old or new. What
//     must never happen is a sector that reads as neither, and the danger is an L2 entry on
//     disk whose cluster's data is not: the guest then reads the cluster's previous host
//     bytes. Those are zeros, and so harmless, exactly when the cluster is fresh (never
//     written since the file grew over it; the reservation made the file that long on disk
//     before handing it out, so the entry never points past the end) and the guest read
//     zeros there before (no data, no compressed or shared cluster, no backing file showing
//     through unless the entry was a zero one). For those links (every allocating write of a
//     fresh image without a backing file) the table is written whenever it is evicted. Every
//     other link (a reused cluster holding stale data, copy-on-write from a backing file, a
//     snapshot's or a compressed cluster) marks its table (publishData, called by linkWrite,
//     the one place that sets entries mapping newly written data), and the table is written
//     only after a data fsync that covers the link (beforeL2Write; one sync covers every
//     link made before it). That is QEMU's rule (qcow2_cache_depends_on_flush), kept per
//     table instead of per cache. The L1 entry of a new L2 table is written only by Flush (or
//     a batch of frees), after the L2 tables are synced, so it never needs a sync of its own
//     on the write path.
//   - Freeing: L2 entry cleared -> fsync -> L1 entries -> fsync -> refcount block (count
//     -1). Frees are batched (mapping.go freeClusters): the decrements wait until applyFrees
//     flushes the L2 cache and writes the dirty L1 entries, at Flush or when many are
//     pending. The L1 matters when an entry was switched in memory only (a shared table's
//     copy whose L1 write failed, a shrink): until it is on disk, the old table is what the
//     file maps, with the references being dropped. A crash in between leaks; it never
//     leaves a reference to a free cluster, which the allocator could hand out twice.
//     QEMU declares the same order as a cache dependency (refcounts on L2), and flushes both
//     caches each time allocating and freeing alternate; batching (and allocating from
//     reserved batches, which needs no dependency at all) keeps the graph free of cycles
//     and the syncs few. Dependency cycles, should one ever be
//     declared, are still broken when declared, by flushing (as qcow2_cache_set_dependency).
//   - New refcount block: block -> fsync -> reftable entry -> fsync (the refcount cache's
//     flushAll writes reftable entries after its blocks and syncs again).
//   - Growing a table (reftable, L1): new structures -> fsync -> new table -> fsync -> header
//     pointer -> fsync -> free the old table. The header write is the commit point.
//   - Shared L2 table copied (snapshots): copy -> fsync -> L1 entry -> fsync -> old table's
//     count -1 (if the L1 write fails, the next applyFrees or Flush writes it first).
//   - Dirty bit (lazy refcounts): header -> fsync before the first write; cleared after a full
//     flush on close. Corrupt bit: header -> fsync as soon as corruption is found.
//
// Flush itself:
//
//  1. fsync the data file (the image file when there is none), without the metadata lock:
//     every write linked before it has its data durable, which satisfies the data-before-L2
//     rule for every dirty L2 table (a table marked by a write linked meanwhile keeps its
//     requirement, and the data is synced again before that table is written);
//
// then, with the metadata lock held (caches with nothing to write are skipped):
//
//  2. refcount cache: dirty blocks -> fsync -> dirty reftable entries -> fsync (after the L2
//     cache, if the refcounts depend on it);
//  3. L2 cache: dirty tables -> fsync;
//  4. L1: dirty entries (512-byte sectors) -> fsync;
//  5. batched frees: their L2 and L1 entries are on disk now; refcounts -1 -> refcount flush;
//  6. the image file is extended to cover every allocated cluster (a cluster whose data was
//     only partly written, with extended L2, may lie past the end), then fsync.
//
// Metadata between flushes lives in the caches (write-back, like QEMU's default cache mode);
// OpenOptions.WriteThrough flushes after every write request.

// Flush makes every completed write durable. The data file is synced first without the
// metadata lock (requests go on meanwhile); the metadata is then written under it.
func (img *Image) Flush() error {
	img.gate.RLock()
	defer img.gate.RUnlock()
	img.reportBitmaps()
	return img.flush()
}

// flush is Flush for callers that hold the gate already.
func (img *Image) flush() error {
	start := time.Now()
	defer func() { img.hooks.Flushed(time.Since(start)) }()
	img.mu.Lock()
	if img.readOnly || img.closed {
		img.mu.Unlock()
		return nil
	}
	gen := img.linkGen
	img.mu.Unlock()
	if err := img.data.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync data: %w", err)
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	// Every link up to gen had its data written before it: the sync above covered them. A
	// link made meanwhile keeps its table's requirement.
	img.dataSynced = max(img.dataSynced, gen)
	return img.flushMetadata()
}

// publishData declares that L2 table t is about to map guest data written since the last data
// sync, whose cluster would not read as the guest's old contents should the table reach the
// disk before the data (see linkWrite's mustSyncFirst): the data file is synced before t is
// written next. Called with mu held, before the entry is set: whatever runs between setting
// an entry and the end of the link (a batch of frees applied by freeClusters, which writes the
// L2 tables) then finds the requirement declared.
func (img *Image) publishData(t *l2Table) {
	img.linkGen++
	t.syncGen = img.linkGen
}

// beforeL2Write is the L2 cache's beforeWrite: a table that maps data linked since the last
// data sync, and that needs it durable first, gets that sync now. One sync covers every link
// made before it, so a run of evictions after it writes without another.
func (img *Image) beforeL2Write(_ hostCluster, t *l2Table) error {
	if t.syncGen <= img.dataSynced {
		return nil
	}
	gen := img.linkGen
	if err := img.data.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync data: %w", err)
	}
	img.dataSynced = gen
	return nil
}

// flushL2 writes every dirty L2 table (after what it depends on) and syncs.
func (img *Image) flushL2() error { return img.l2.flushAll() }

// flushLocked is Flush with mu held throughout.
func (img *Image) flushLocked() error {
	if img.readOnly || img.closed {
		return nil
	}
	// 1.
	gen := img.linkGen
	if err := img.data.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync data: %w", err)
	}
	img.dataSynced = gen
	return img.flushMetadata()
}

// flushMetadata is steps 2-6 of Flush, with mu held. Caches with nothing to write or sync
// are skipped, so a flush after in-place writes only costs the data sync.
func (img *Image) flushMetadata() error {
	if img.readOnly || img.closed {
		return nil
	}
	if img.corrupt != nil {
		return fmt.Errorf("%w: not flushing metadata of a corrupt image (%v)", ErrCorrupt, img.corrupt)
	}
	// 2.
	if !img.alloc.cache.clean() || len(img.alloc.tableDirty) > 0 {
		if err := img.alloc.flush(); err != nil {
			return err
		}
	}
	// 3.
	if !img.l2.clean() {
		if err := img.flushL2(); err != nil {
			return err
		}
	}
	// 4.
	if len(img.l1.dirty) > 0 {
		if err := img.writeL1Dirty(); err != nil {
			return err
		}
		if err := img.file.Sync(); err != nil {
			return err
		}
	}
	// 5.
	if len(img.deferred) > 0 {
		if err := img.applyFrees(); err != nil {
			return err
		}
		if err := img.alloc.flush(); err != nil {
			return err
		}
	}
	// 6.
	if err := img.extendFile(); err != nil {
		return err
	}
	if end := img.fileEnd(); end != img.lastHost {
		img.lastHost = end
		img.stateChanged()
	}
	return nil
}

// extendFile grows the image file to cover every allocated cluster. Done with mu held, so no
// allocation (and so no data write past fileEnd) can happen meanwhile: truncate never cuts.
func (img *Image) extendFile() error {
	end := img.fileEnd()
	size, err := img.file.Size()
	if err != nil {
		return err
	}
	if uint64(size) >= end {
		return nil
	}
	if err := img.file.Truncate(int64(end)); err != nil {
		return fmt.Errorf("qcow2: extend image file to %d bytes: %w", end, err)
	}
	return img.file.Sync()
}

// trimFile cuts what reservations added past the image's end (alloc_reserve.go extends the
// file to cover a batch), once releaseReservation and a flush have put every cluster past
// fileEnd back to refcount 0 on disk. The file keeps the length it would have had without
// them: its length before the first extension, fileEnd, and the end of every write through
// the image file, whichever is largest. Called with mu held, by Close.
func (img *Image) trimFile() error {
	a := img.alloc
	if a.grownFrom == 0 {
		return nil
	}
	end := max(img.fileEnd(), a.grownFrom)
	if l, ok := img.file.(*syncLatch); ok {
		end = max(end, l.writeEnd.Load())
	}
	size, err := img.file.Size()
	if err != nil {
		return err
	}
	if uint64(size) <= end {
		a.grownFrom = 0
		return nil
	}
	if err := img.file.Truncate(int64(end)); err != nil {
		return fmt.Errorf("qcow2: truncate image file to %d bytes: %w", end, err)
	}
	a.grownFrom = 0
	return img.file.Sync()
}
