// The metadata layer's plans: read extents, the in-flight cluster table, host pins, deferred frees.
package qcow2

import "errors"

// readExt is one piece of a read plan: a guest range and where its bytes come from.
type readExt struct {
	off  uint64 // guest offset
	n    uint64
	kind Kind
	// host is, for kindData, the host byte offset of off; for kindCompressed, the start of the
	// compressed bytes.
	host HostOffset
	clen uint64 // kindCompressed: bytes of compressed data at host
	cin  uint64 // kindCompressed: offset of off within the decompressed cluster
}

// hostRange is a byte range of the image file.
type hostRange struct {
	off HostOffset
	n   uint64
}

// pinSet records the image-file ranges that data I/O outside the metadata lock is using. A
// cluster freed while pinned is freed only when the pin goes (deferredFree), so it cannot be
// handed to another guest cluster while a request still reads or writes it.
type pinSet struct {
	next   uint64
	active map[uint64][]hostRange
}

func (p *pinSet) add(r []hostRange) uint64 {
	if len(r) == 0 {
		return 0
	}
	if p.active == nil {
		p.active = map[uint64][]hostRange{}
	}
	p.next++
	p.active[p.next] = r
	return p.next
}

func (p *pinSet) overlaps(off HostOffset, n uint64) bool {
	for _, rs := range p.active {
		for _, r := range rs {
			if rangesOverlap(off, n, r.off, r.n) {
				return true
			}
		}
	}
	return false
}

// deferredFree is a free waiting to be applied (see freeClusters).
type deferredFree struct {
	c     hostCluster
	n     ClusterCount
	punch bool
}

// maxPendingFrees is how many frees may wait before applyFrees runs without a Flush.
const maxPendingFrees = 1024

// unpin drops a pin. Frees it held back are applied with the next batch. Called with mu held.
func (img *Image) unpin(id uint64) {
	if id != 0 {
		delete(img.pins.active, id)
	}
}

// freeClusters releases [c, c+n) of the image file after an L2 entry stopped pointing at
// them. The refcount decrement is batched: it waits in img.deferred until applyFrees (at
// the next Flush, or when many are waiting), which first makes the L2 tables durable, so the
// entry is cleared on disk before the count drops (QEMU orders the same with a cache
// dependency, refcounts on L2, which with interleaved allocations costs two syncs per
// switch; batching keeps one direction only). Until then the clusters stay allocated, so
// nothing can reuse them early. With punch, the bytes of clusters whose refcount reaches 0
// are deallocated in the host file then; a cluster still counted elsewhere (shared with a
// snapshot, or holding other compressed clusters) keeps its bytes.
func (img *Image) freeClusters(c hostCluster, n ClusterCount, punch bool) {
	if img.alloc == nil || n == 0 {
		return
	}
	if punch {
		img.punchEarly(c, n)
	}
	if k := len(img.deferred) - 1; k >= 0 && img.deferred[k].punch == punch && img.deferred[k].c.Add(img.deferred[k].n) == c {
		img.deferred[k].n += n // extend the previous run
	} else {
		img.deferred = append(img.deferred, deferredFree{c: c, n: n, punch: punch})
	}
	if len(img.deferred) >= maxPendingFrees {
		if err := img.applyFrees(); err != nil {
			img.log.Warn("qcow2: applying batched frees failed; they stay pending", "err", err)
		}
	}
}

// applyFrees makes the L2 tables and then the L1 entries durable (Flush's steps 3 and 4),
// then drops the refcounts of every pending free whose clusters no request in flight is using
// (pins); the others wait for a later batch. The L1 too: an entry switched in memory but not
// on disk (a table copied from a snapshot's whose L1 write failed, entries cleared by a
// shrink) leaves the old table reachable on disk, with the references the frees drop.
func (img *Image) applyFrees() error {
	if len(img.deferred) == 0 {
		return nil
	}
	if err := img.flushL2(); err != nil {
		return err
	}
	if len(img.l1.dirty) > 0 {
		if err := img.writeL1Dirty(); err != nil {
			return err
		}
		if err := img.file.Sync(); err != nil {
			return err
		}
	}
	// A free that fails is put back (allocator.retryFree): build the new list as we go.
	pending := img.deferred
	img.deferred = nil
	for _, d := range pending {
		if img.pins.overlaps(d.c.Offset(img.geo), img.geo.Bytes(d.n)) {
			img.deferred = append(img.deferred, d)
			continue
		}
		img.freeNow(d.c, d.n, d.punch)
	}
	return nil
}

// punchEarly deallocates at once the host bytes of the clusters of [c, c+n) that this free
// will release (refcount 1, no other free of them pending) and that no request in flight is
// reading, as QEMU discards them at the end of the request that freed them: the guest asked
// for their contents to go, so an L2 entry still pointing at them after a crash reads zeros,
// which is what the request asked for. The refcount still drops only in applyFrees. (The
// host file's allocation is what QEMU's metadata-preallocation heuristic measures, so it
// should shrink when QEMU's does.)
func (img *Image) punchEarly(c hostCluster, n ClusterCount) {
	g := img.geo
	for k := ClusterCount(0); k < n; k++ {
		cl := c.Add(k)
		off := cl.Offset(g)
		if img.pins.overlaps(off, g.ClusterSize()) {
			continue
		}
		rc, err := img.alloc.refcount(cl)
		if err != nil || rc != 1 {
			continue
		}
		pending := false
		for _, d := range img.deferred {
			if cl >= d.c && cl < d.c.Add(d.n) {
				pending = true
				break
			}
		}
		if !pending {
			img.punchHost(img.file, off, g.ClusterSize())
		}
	}
}

// freeNow drops the refcounts of [c, c+n) at once (the caller has ordered it).
func (img *Image) freeNow(c hostCluster, n ClusterCount, punch bool) {
	img.alloc.free(c, n, punch)
}

// freeEntry releases what an L2 entry (being replaced) pointed at: a data cluster, a
// preallocated zero cluster or a compressed range. Data in an external data file is not
// refcounted: with punch its bytes are deallocated instead.
func (img *Image) freeEntry(s slot, punch bool) {
	g := img.geo
	if s.e.Compressed() {
		off, n := s.e.compressedRange(g)
		first, last := off.cluster(g), off.Add(n-1).cluster(g)
		img.freeClusters(first, ClusterCount(last-first+1), punch)
		return
	}
	host, ok := img.hostOf(s.e)
	if !ok {
		return
	}
	if img.data != img.file {
		if punch {
			img.punchHost(img.data, host, g.ClusterSize())
		}
		return
	}
	img.freeClusters(host.cluster(g), 1, punch)
}

// punchHost deallocates a host range (the guest discarded it). Stores that cannot punch
// holes keep the bytes; nothing reads them.
func (img *Image) punchHost(s Storage, off HostOffset, n uint64) {
	if hp, ok := s.(HolePuncher); ok {
		if err := hp.PunchHole(int64(off), int64(n)); err != nil && !errors.Is(err, ErrUnsupported) {
			img.log.Debug("qcow2: punch hole failed", "off", uint64(off), "n", n, "err", err)
		}
	}
}

// waitBusy returns the channel of an in-flight change to one of the guest clusters in
// [first, last], or nil.
func (img *Image) waitBusy(first, last guestCluster) chan struct{} {
	if len(img.busy) == 0 {
		return nil
	}
	if uint64(last-first) > uint64(len(img.busy)) {
		for gc, ch := range img.busy {
			if gc >= first && gc <= last {
				return ch
			}
		}
		return nil
	}
	for gc := first; gc <= last; gc++ {
		if ch, ok := img.busy[gc]; ok {
			return ch
		}
	}
	return nil
}

// release ends in-flight changes, waking their waiters.
func (img *Image) release(gcs []guestCluster) {
	for _, gc := range gcs {
		if ch, ok := img.busy[gc]; ok {
			close(ch)
			delete(img.busy, gc)
		}
	}
}

// trimCaches evicts down to the cache sizes; called where no table pointer is held.
func (img *Image) trimCaches() {
	if err := img.l2.trim(); err != nil {
		img.log.Warn("qcow2: L2 cache eviction failed", "err", err)
	}
	if img.alloc != nil {
		if err := img.alloc.cache.trim(); err != nil {
			img.log.Warn("qcow2: refcount cache eviction failed", "err", err)
		}
	}
	img.reportOccupancy()
}

// mapRead plans a read of [off, off+n): MapRead of the design. It appends to ext and returns
// the image-file ranges the plan reads (to be pinned).
func (img *Image) mapRead(off, n uint64, ext []readExt) ([]readExt, []hostRange, error) {
	g := img.geo
	cs := g.ClusterSize()
	scs := g.subclusterSize()
	end := off + n
	add := func(e readExt) {
		if len(ext) > 0 {
			p := &ext[len(ext)-1]
			if p.kind == e.kind && p.off+p.n == e.off && e.kind != kindCompressed &&
				(e.kind != kindData || p.host.Add(p.n) == e.host) {
				p.n += e.n
				return
			}
		}
		ext = append(ext, e)
	}
	for pos := off; pos < end; {
		l1i := GuestOffset(pos).l1Index(g)
		tableEnd := uint64(l1i.firstCluster(g).Offset(g)) + g.guestBytesPerL2()
		stop := min(end, tableEnd)
		c, ok, err := img.l2For(l1i)
		if err != nil {
			return ext, nil, err
		}
		if !ok {
			add(readExt{off: pos, n: stop - pos, kind: kindUnallocated})
			pos = stop
			continue
		}
		lo, hi := g.l2Span(pos, stop)
		t, err := img.l2Get(c, lo, hi)
		if err != nil {
			return ext, nil, err
		}
		for pos < stop {
			gc := GuestOffset(pos).cluster(g)
			if err := t.check(gc.l2Index(g)); err != nil {
				return ext, nil, err
			}
			s := t.get(gc.l2Index(g))
			in := GuestOffset(pos).inCluster(g)
			cend := min(cs, in+(stop-pos))
			if s.e.Compressed() {
				host, clen := s.e.compressedRange(g)
				add(readExt{off: pos, n: cend - in, kind: kindCompressed, host: host, clen: clen, cin: in})
				pos += cend - in
				continue
			}
			host, _ := img.hostOf(s.e)
			for in < cend {
				sc := uint32(in / scs)
				scEnd := min(cend, uint64(sc+1)*scs)
				k := img.subKind(s, sc)
				e := readExt{off: pos, n: scEnd - in, kind: k}
				if k == kindData {
					e.host = host.Add(in)
				}
				add(e)
				pos += scEnd - in
				in = scEnd
			}
		}
	}
	var pins []hostRange
	for _, e := range ext {
		switch {
		case e.kind == kindCompressed:
			pins = append(pins, hostRange{e.host, e.clen})
		case e.kind == kindData && img.data == img.file:
			pins = append(pins, hostRange{e.host, e.n})
		}
	}
	return ext, pins, nil
}

// lockedMapRead takes the metadata lock, plans, pins, and unlocks.
func (img *Image) lockedMapRead(off, n uint64) ([]readExt, uint64, error) {
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.closed {
		return nil, 0, ErrClosed
	}
	ext, pins, err := img.mapRead(off, n, nil)
	img.trimCaches()
	if err != nil {
		return nil, 0, img.fail(err)
	}
	if img.data == img.file {
		for _, e := range ext {
			if e.kind == kindData {
				if what := img.overlapsFixed(e.host, e.n); what != "" {
					return nil, 0, img.fail(corruptf("guest data at %#x maps to host %#x, inside the %s", e.off, uint64(e.host), what))
				}
			}
		}
	}
	img.checkMappedRefcounts(pins)
	return ext, img.pins.add(pins), nil
}

// fail marks the image corrupt when err says it is.
func (img *Image) fail(err error) error {
	if isCorrupt(err) {
		return img.markCorrupt(err)
	}
	return err
}

func isCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }
