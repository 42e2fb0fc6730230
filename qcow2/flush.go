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
//   - Allocating: refcount block (count +1) -> fsync -> guest data and its copy-on-write ->
//     fsync -> L2 entry -> fsync -> L1 entry (for a new L2 table) -> fsync.
//     Declared by l2.dependOn(refcounts) when clusters are allocated (unless the dirty bit is
//     set: lazy refcounts), and by publishData before a write sets its first L2 entry (the
//     one place that sets entries mapping newly written data: linkWrite). A crash at any
//     point leaks at most: no entry on disk ever points at a cluster whose count is 0 or
//     whose data was not written.
//   - Freeing: L2 entry cleared -> fsync -> L1 entries -> fsync -> refcount block (count
//     -1). Frees are batched (mapping.go freeClusters): the decrements wait until applyFrees
//     flushes the L2 cache and writes the dirty L1 entries, at Flush or when many are
//     pending. The L1 matters when an entry was switched in memory only (a shared table's
//     copy whose L1 write failed, a shrink): until it is on disk, the old table is what the
//     file maps, with the references being dropped. A crash in between leaks; it never
//     leaves a reference to a free cluster, which the allocator could hand out twice.
//     QEMU declares the same order as a cache dependency (refcounts on L2), and flushes both
//     caches each time allocating and freeing alternate; batching keeps the dependency graph
//     one-way (L2 on refcounts) and the syncs few. Dependency cycles, should one ever be
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
//     rule for every dirty L2 table (if a write was linked meanwhile, the L2 cache keeps its
//     requirement, and syncs the data again before writing a table);
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
	if img.linkGen == gen {
		// Nothing was linked since: the sync above covered the data of every dirty L2 entry.
		img.l2.needSync = nil
	}
	return img.flushMetadata()
}

// publishData declares that L2 entries about to be set map guest data written since the last
// data sync: the data file is synced before any L2 table is written next, and a Flush whose
// unlocked data sync ran meanwhile does not drop that requirement (linkGen). Called with mu
// held, before the first entry is set: whatever runs between setting an entry and the end of
// the link (a batch of frees applied by freeClusters, which writes the L2 tables) then finds
// the requirement declared.
func (img *Image) publishData() {
	img.l2.requireSync(img.data.Sync)
	img.linkGen++
}

// flushL2 writes every dirty L2 table (after what it depends on) and syncs.
func (img *Image) flushL2() error { return img.l2.flushAll() }

// flushLocked is Flush with mu held throughout.
func (img *Image) flushLocked() error {
	if img.readOnly || img.closed {
		return nil
	}
	// 1.
	if err := img.data.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync data: %w", err)
	}
	img.l2.needSync = nil
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
