// Changing the refcount width of an open image (qemu-img amend -o refcount_bits=N, QEMU's
// qcow2_change_refcount_order): the current counts are copied into a new reftable and new
// refcount blocks of the new width, written past the end of the file, and one header write
// switches to them (docs/chains.md, "Changing the refcount width").
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ChangeRefcountOrder rebuilds the refcount structures with refcount entries of 1<<order bits.
// The counts are copied as they are (leaks stay leaks). A count that does not fit the new
// width is refused with QEMU's message before anything is written.
//
// Crash safety: the new blocks and reftable go past the end of the file and are synced, and
// read back into the new allocator, before the header names them; the header switch (refcount
// order, reftable offset and size: fixed fields of the first sector) is one write, synced. Then the old structures are freed in the new ones.
// status gets QEMU's status calls (amend_refcount_progress.go).
// A crash before the switch leaves the old structures (the new ones lie past what they
// count); after it, the new ones, with the old structures as leaks at worst.
func (img *Image) ChangeRefcountOrder(order uint32, status AmendStatus) error {
	return img.amendLocked(func() error {
		if img.hdr.RefcountOrder == order {
			return nil
		}
		if order > maxRefcountOrder {
			return &AmendError{"Refcount width must be a power of two and may not exceed 64 bits"}
		}
		if img.hdr.Version < 3 {
			return &AmendError{"Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)"}
		}
		old := img.alloc
		old.releaseReservation()
		if err := old.flush(); err != nil {
			return err
		}
		counts, err := old.allCounts()
		if err != nil {
			return err
		}
		newG := img.geo
		newG.RefcountOrder = order
		n := int64(old.tableClusters) * int64(img.geo.ClusterSize()/reftableEntrySize)
		if err := checkCountsFit(counts, newG, img.geo); err != nil {
			reportRefcountWalks(status, n, 0, 1, 3, int64(firstTooWide(counts, newG)/img.geo.refBlockEntries()))
			return err
		}
		walks := 3
		if status != nil {
			present := make([]bool, n)
			for i := range present {
				present[i] = i < len(old.table) && old.table[i].Offset() != 0
			}
			walks, _ = refcountWalks(counts, present, img.geo, newG)
		}
		reportRefcountWalks(status, n, 0, walks-1, walks, -1)
		start := hostCluster(max(uint64(len(counts)), uint64(img.geo.clustersFor(img.fileEnd()))))
		lay, err := planRefcounts(counts, newG, start)
		if err != nil {
			return err
		}
		if err := img.writeRefcountLayout(lay, counts, newG); err != nil {
			return err
		}
		h := img.hdr
		h.RefcountOrder = order
		h.RefTableOffset = lay.start.Offset(newG)
		h.RefTableClusters = uint32(lay.tableClusters)
		end := uint64(lay.end().Offset(newG))
		a, err := img.allocatorFor(&h, max(img.fileEnd(), end))
		if err != nil {
			return err // nothing switched: the new structures lie past what the old ones count
		}
		if err := img.writeHeaderSync(&h); err != nil {
			var unwritten *headerWriteError
			if !errors.As(err, &unwritten) {
				// The header on disk may name either structures: no further change is
				// safe until the image is reopened.
				img.broken = fmt.Errorf("switching to the new refcount structures failed: %w", err)
			}
			return err
		}
		img.hdr, img.geo = h, h.Geometry()
		img.fileSize = max(img.fileEnd(), end)
		img.alloc = a
		reportRefcountWalks(status, n, walks-1, walks, walks, -1)
		return img.freeOldRefcounts(old)
	})
}

// allCounts returns the refcount of every host cluster up to the last one whose count is not
// 0, read through the allocator's cache.
func (a *allocator) allCounts() ([]refcount, error) {
	per := a.g.refBlockEntries()
	var counts []refcount
	for k := range a.table {
		i := refTableIndex(k)
		rb, _, ok, err := a.refblockFor(i)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		v := a.view(rb)
		first := uint64(i.firstCluster(a.g))
		for j := uint64(0); j < per; j++ {
			if n := v.Get(refBlockIndex(j)); n != 0 {
				for uint64(len(counts)) <= first+j {
					counts = append(counts, 0)
				}
				counts[first+j] = n
			}
		}
	}
	return counts, nil
}

// checkCountsFit refuses, with QEMU's message, a count too large for the new width; the first
// such cluster is named, at its offset in the (unchanged) cluster geometry g.
func checkCountsFit(counts []refcount, newG, g Geometry) error {
	limit := newG.maxRefcount()
	for c, n := range counts {
		if n > limit {
			return &AmendError{fmt.Sprintf("Cannot decrease refcount entry width to %d bits: Cluster at offset %#x has a refcount of %d",
				newG.RefcountBits(), uint64(hostCluster(c).Offset(g)), uint64(n))}
		}
	}
	return nil
}

// firstTooWide is the first cluster whose count does not fit newG's width (len(counts)
// when every count fits).
func firstTooWide(counts []refcount, newG Geometry) uint64 {
	for c, v := range counts {
		if v > newG.maxRefcount() {
			return uint64(c)
		}
	}
	return uint64(len(counts))
}

// refcountLayout is where new refcount structures go: the reftable at start, then one block
// for each of blocks (reftable indices, ascending), all contiguous.
type refcountLayout struct {
	start         hostCluster
	tableClusters uint64
	blocks        []refTableIndex
}

func (l *refcountLayout) end() hostCluster {
	return l.start.Add(ClusterCount(l.tableClusters + uint64(len(l.blocks))))
}

// planRefcounts finds the smallest layout at start whose blocks cover every counted cluster
// and the new structures themselves. Adding blocks or reftable clusters can only need more of
// them, so the loop grows to a fixed point.
func planRefcounts(counts []refcount, g Geometry, start hostCluster) (*refcountLayout, error) {
	per := g.refBlockEntries()
	cs := g.ClusterSize()
	used := map[uint64]bool{}
	for c, n := range counts {
		if n != 0 {
			used[uint64(c)/per] = true
		}
	}
	var nRT, nRB uint64
	for range 1 << 20 {
		end := uint64(start) + nRT + nRB
		need := map[uint64]bool{}
		maxIdx := uint64(0)
		for i := range used {
			need[i] = true
			maxIdx = max(maxIdx, i)
		}
		if end > uint64(start) {
			for i := uint64(start) / per; i <= (end-1)/per; i++ {
				need[i] = true
				maxIdx = max(maxIdx, i)
			}
		}
		rt := ((maxIdx+1)*reftableEntrySize + cs - 1) / cs
		if rt*cs > maxRefTableBytes {
			return nil, &AmendError{"This operation would make the refcount table grow beyond the maximum size supported by QEMU, aborting"}
		}
		if rt == nRT && uint64(len(need)) == nRB {
			l := &refcountLayout{start: start, tableClusters: rt}
			for i := uint64(0); i <= maxIdx; i++ {
				if need[i] {
					l.blocks = append(l.blocks, refTableIndex(i))
				}
			}
			return l, nil
		}
		nRT, nRB = rt, uint64(len(need))
	}
	return nil, fmt.Errorf("qcow2: internal error: refcount layout does not converge")
}

// writeRefcountLayout writes the blocks and the reftable of lay, holding counts plus 1 for
// each cluster of the new structures, and syncs them.
func (img *Image) writeRefcountLayout(lay *refcountLayout, counts []refcount, g Geometry) error {
	cs := g.ClusterSize()
	per := g.refBlockEntries()
	count := func(c uint64) refcount {
		if c >= uint64(lay.start) && c < uint64(lay.end()) {
			return 1
		}
		if c < uint64(len(counts)) {
			return counts[c]
		}
		return 0
	}
	table := make([]byte, lay.tableClusters*cs)
	blockAt := lay.start.Add(ClusterCount(lay.tableClusters))
	const batchBytes = 1 << 20
	batch := make([]byte, 0, max(cs, batchBytes))
	batchAt := blockAt.Offset(g)
	for k, i := range lay.blocks {
		binary.BigEndian.PutUint64(table[uint64(i)*reftableEntrySize:], uint64(blockAt.Add(ClusterCount(k)).Offset(g)))
		batch = batch[:len(batch)+int(cs)]
		rb := RefBlock{Data: batch[len(batch)-int(cs):], Order: g.RefcountOrder}
		clear(rb.Data)
		first := uint64(i) * per
		for j := uint64(0); j < per; j++ {
			if n := count(first + j); n != 0 {
				rb.Set(refBlockIndex(j), n)
			}
		}
		if len(batch)+int(cs) > cap(batch) || k == len(lay.blocks)-1 {
			if _, err := img.file.WriteAt(batch, int64(batchAt)); err != nil {
				return fmt.Errorf("qcow2: write refcount blocks at %#x: %w", uint64(batchAt), err)
			}
			batchAt = batchAt.Add(uint64(len(batch)))
			batch = batch[:0]
		}
	}
	if _, err := img.file.WriteAt(table, int64(lay.start.Offset(g))); err != nil {
		return fmt.Errorf("qcow2: write refcount table at %#x: %w", uint64(lay.start.Offset(g)), err)
	}
	if err := img.file.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync new refcount structures: %w", err)
	}
	return nil
}

// allocatorFor makes the allocator of the refcount structures header h names (already
// written and synced), before the header switch, so that a failure to read them back leaves
// the image as it was.
func (img *Image) allocatorFor(h *Header, fileSize uint64) (*allocator, error) {
	savedH, savedG := img.hdr, img.geo
	img.hdr, img.geo = *h, h.Geometry()
	defer func() { img.hdr, img.geo = savedH, savedG }()
	return newAllocator(img, fileSize, img.caches.refcountEntries(img.geo))
}

// freeOldRefcounts frees the old reftable and refcount blocks in the new structures, after the
// header switch (until this is flushed, they are leaks).
func (img *Image) freeOldRefcounts(old *allocator) error {
	a, oldG := img.alloc, old.g
	a.free(old.tableOff.cluster(oldG), ClusterCount(old.tableClusters), true)
	for _, e := range old.table {
		if off := e.Offset(); off != 0 {
			a.free(off.cluster(oldG), 1, true)
		}
	}
	img.stateChanged()
	return a.flush()
}
