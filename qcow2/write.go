// Guest writes: plan (find or create mappings) under the metadata lock, pwrite outside it, link.
package qcow2

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
)

// cwrite is the part of a write plan for one guest cluster.
type cwrite struct {
	gc       guestCluster
	l2       hostCluster // the L2 table holding gc's entry
	from, to uint64      // bytes of the cluster the guest writes
	host     HostOffset  // the cluster the bytes go to
	// inPlace: host is the cluster's own data cluster, writable in place (COPIED, and with
	// extended L2 every written subcluster already allocated): no metadata changes.
	inPlace bool
	// needAlloc: host is still to be allocated (set while planning); newAlloc: host was
	// allocated by this plan (freed again if the write fails).
	needAlloc, newAlloc bool
	fresh               bool // host was never written: it reads as zeros
	skipFill            bool // the fills need not be written (see zeroCOW)
	// zeroCOW: the fills read as zeros here (zeroCOWHere) and, checked when executing, below
	// (zeroCOWBelow for the regions in cowBelow): as QEMU's handle_alloc_space, the host
	// window is zeroed with ZeroRange and only the guest bytes are written, in a new cluster
	// or one reused in place; where ZeroRange is unsupported, a fresh cluster needs no fill.
	zeroCOW   bool
	cowBelow  []span // cluster-relative regions the backing chain must read as zeros
	fills     []span // parts to copy from the old contents (copy-on-write)
	old, next slot   // the entry before and after the write
	freeOld   bool   // release what old points at once next is linked
}

// writePlan is the metadata layer's answer to a write: where every byte goes, which clusters
// are now in flight (busy), and which host ranges are pinned.
type writePlan struct {
	n    uint64 // guest bytes covered, from the request's offset
	cl   []cwrite
	busy []guestCluster
	pin  uint64
}

// WriteAt writes p to the virtual disk at off (io.WriterAt). The metadata lock is held only to
// find or create the mappings; the data goes out with one pwrite per contiguous host extent,
// outside every lock. Two writes racing for one unallocated cluster allocate it once: the
// second waits for the first to link it, then writes in place.
func (img *Image) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset %d", ErrOutOfRange, off)
	}
	img.gate.RLock()
	defer img.gate.RUnlock()
	if err := img.checkRequest(uint64(off), uint64(len(p)), true); err != nil {
		return 0, err
	}
	img.markDirty(uint64(off), uint64(len(p)))
	if err := img.writeAt(p, uint64(off)); err != nil {
		return 0, err
	}
	if img.opts.WriteThrough {
		if err := img.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// maxWritePlan bounds the guest bytes one write plan covers.
const maxWritePlan = 8 << 20

func (img *Image) writeAt(p []byte, off uint64) error {
	for len(p) > 0 {
		plan, err := img.lockedMapWrite(off, min(uint64(len(p)), maxWritePlan))
		if err != nil {
			return err
		}
		err = img.execWrite(p[:plan.n], off, plan)
		img.mu.Lock()
		if err != nil {
			img.abortWrite(plan)
		} else {
			err = img.linkWrite(plan)
		}
		img.trimCaches()
		img.mu.Unlock()
		if err != nil {
			return err
		}
		p, off = p[plan.n:], off+plan.n
	}
	return nil
}

// lockedMapWrite plans a write, waiting (without the lock) for in-flight changes to the first
// cluster when there are any.
func (img *Image) lockedMapWrite(off, n uint64) (*writePlan, error) {
	for {
		img.mu.Lock()
		if err := img.prepareWrite(); err != nil {
			img.mu.Unlock()
			return nil, err
		}
		plan, wait, err := img.mapWrite(off, n)
		if err != nil {
			err = img.fail(err)
		}
		img.trimCaches()
		img.mu.Unlock()
		if err != nil {
			return nil, err
		}
		if wait != nil {
			<-wait
			continue
		}
		return plan, nil
	}
}

// mapWrite plans a write of [off, off+n) (MapWrite of the design): it finds or creates L2
// tables, allocates host clusters (one contiguous run per L2 table), marks the clusters whose
// entries will change as in flight, and pins the host ranges it will touch. The plan may cover
// only a prefix of the range: it stops before a cluster another request is changing. When the
// very first cluster is busy it returns that request's channel to wait on instead.
func (img *Image) mapWrite(off, n uint64) (plan *writePlan, wait chan struct{}, err error) {
	g := img.geo
	cs := g.ClusterSize()
	plan = &writePlan{}
	var pins []hostRange
	defer func() {
		if err != nil {
			img.abortWrite(plan)
			plan = nil
		}
	}()
	end := off + n
	pos := off
outer:
	for pos < end {
		l1i := GuestOffset(pos).l1Index(g)
		tableEnd := uint64(l1i.firstCluster(g).Offset(g)) + g.guestBytesPerL2()
		stop := min(end, tableEnd)
		if ch := img.busy[GuestOffset(pos).cluster(g)]; ch != nil {
			if len(plan.cl) == 0 {
				return nil, ch, nil
			}
			break
		}
		lo, hi := g.l2Span(pos, stop)
		key, t, err := img.l2ForWrite(l1i, lo, hi)
		if err != nil {
			return plan, nil, err
		}
		start := len(plan.cl)
		nalloc := 0
		for pos < stop {
			gc := GuestOffset(pos).cluster(g)
			if ch := img.busy[gc]; ch != nil {
				if len(plan.cl) == 0 {
					return nil, ch, nil
				}
				stop = pos
				break
			}
			if err := t.check(gc.l2Index(g)); err != nil {
				return plan, nil, err
			}
			in := GuestOffset(pos).inCluster(g)
			w := cwrite{gc: gc, l2: key, from: in, to: min(cs, in+(stop-pos)), old: t.get(gc.l2Index(g))}
			img.decide(&w)
			if w.needAlloc && img.data != img.file {
				// External data file: the cluster's place is its guest offset.
				w.host, w.needAlloc = img.dataHostFor(gc), false
			}
			if w.needAlloc {
				nalloc++
			}
			plan.cl = append(plan.cl, w)
			pos += w.to - w.from
		}
		if nalloc > 0 {
			before := img.alloc.end
			// The allocator hands out clusters whose refcounts are on disk already (a
			// reserved batch): the L2 entries need not wait for a refcount flush.
			c, err := img.alloc.allocMeta(ClusterCount(nalloc), AllocData)
			if err != nil {
				return plan, nil, err
			}
			for i := start; i < len(plan.cl); i++ {
				if w := &plan.cl[i]; w.needAlloc {
					w.host, w.needAlloc, w.newAlloc = c.Offset(g), false, true
					w.fresh = w.host >= before
					c++
				}
			}
		}
		for i := start; i < len(plan.cl); i++ {
			w := &plan.cl[i]
			if w.inPlace {
				pins = append(pins, hostRange{w.host, cs})
			} else {
				w.next = slot{e: makeL2Entry(w.host, true, false), b: w.next.b}
				if len(w.fills) > 0 {
					w.zeroCOW, w.cowBelow = img.zeroCOWHere(w)
				}
				img.busy[w.gc] = make(chan struct{})
				plan.busy = append(plan.busy, w.gc)
				if w.freeOld && img.data == img.file {
					if w.old.e.Compressed() {
						h, l := w.old.e.compressedRange(g)
						pins = append(pins, hostRange{h, l})
					} else if h, ok := img.hostOf(w.old.e); ok {
						pins = append(pins, hostRange{h, cs})
					}
				}
			}
			if !w.newAlloc {
				if err := img.checkDataWrite(w.host, cs); err != nil {
					return plan, nil, err
				}
			}
		}
		if stop < tableEnd && stop < end {
			break outer
		}
	}
	plan.n = pos - off
	plan.pin = img.pins.add(pins)
	return plan, nil, nil
}

// decide chooses, for one cluster, between writing in place, reusing its host cluster, and a
// new cluster, and what must be copied from the old contents.
func (img *Image) decide(w *cwrite) {
	g := img.geo
	s := w.old
	host, has := img.hostOf(s.e)
	if !g.ExtendedL2 {
		w.fills = g.edgeFills(w.from, w.to, 0)
		switch img.subKind(s, 0) {
		case kindData:
			if s.e.copied() {
				w.inPlace, w.host, w.fills = true, host, nil
				return
			}
			w.needAlloc, w.freeOld = true, true
		case kindCompressed:
			w.needAlloc, w.freeOld = true, true
		case kindZero:
			if has && s.e.copied() {
				// A preallocated zero cluster of our own: reuse it, writing the zeros around.
				w.host = host
				return
			}
			w.needAlloc, w.freeOld = true, has
		default:
			w.needAlloc = true
		}
		return
	}
	W := g.scMask(w.from, w.to)
	oldA, oldZ := s.b.Allocated(), s.b.zeroBits()
	switch {
	case s.e.Compressed():
		// Compressed clusters have no subclusters: the new cluster is allocated whole.
		w.needAlloc, w.freeOld = true, true
		w.fills = append(g.wholeSubclusters(^W), g.edgeFills(w.from, w.to, 0)...)
		w.next.b = makeSubclusterBitmap(allSubclusters, 0)
	case has && s.e.copied():
		if oldA&W == W {
			w.inPlace, w.host = true, host
			return
		}
		w.host = host
		w.fills = g.edgeFills(w.from, w.to, oldA)
		w.next.b = makeSubclusterBitmap(oldA|W, oldZ&^W)
	case has:
		// Shared with a snapshot: a new cluster gets everything from the first allocated or
		// written subcluster to the last one, zero and unallocated subclusters in between
		// included, read as the guest sees them; that whole run becomes data (QEMU's
		// calculate_l2_meta copies from the first allocated subcluster to the last).
		run := subclusterRun(oldA | W)
		w.needAlloc, w.freeOld = true, true
		w.fills = append(g.wholeSubclusters(run&^W), g.edgeFills(w.from, w.to, 0)...)
		w.next.b = makeSubclusterBitmap(run, oldZ&^run)
	default:
		w.needAlloc = true
		w.fills = g.edgeFills(w.from, w.to, 0)
		w.next.b = makeSubclusterBitmap(W, oldZ&^W)
	}
}

// subclusterRun returns the subclusters from the lowest set in m to the highest (m != 0).
func subclusterRun(m uint32) uint32 {
	lo, hi := bits.TrailingZeros32(m), 31-bits.LeadingZeros32(m)
	return uint32((uint64(1)<<(hi+1) - 1) &^ (uint64(1)<<lo - 1))
}

// l2ForWrite returns the L2 table for L1 index i, ready to change its entries [lo, hi) (whose
// slices are loaded): a new one if there is none, or a private copy if the table is shared
// with a snapshot (its L1 entry lacks COPIED).
func (img *Image) l2ForWrite(i l1Index, lo, hi l2Index) (hostCluster, *l2Table, error) {
	g := img.geo
	c, ok, err := img.l2For(i)
	if err != nil {
		return 0, nil, err
	}
	if ok && img.l1.entries[i].copied() {
		t, err := img.l2Get(c, lo, hi)
		return c, t, err
	}
	var t *l2Table
	if ok {
		old, err := img.l2GetAll(c)
		if err != nil {
			return 0, nil, err
		}
		t = old.clone()
	} else {
		t = img.l2pool.table()
		t.zeroAll()
	}
	before := img.alloc.end
	nc, err := img.alloc.allocMeta(1, AllocL2)
	if err != nil {
		if !ok {
			img.l2pool.put(t)
		}
		return 0, nil, err
	}
	// A new table is written whole the first time, zeros included, as QEMU writes every
	// slice of a new table (a reused cluster holds stale bytes, and the host file gets the
	// same allocated extents as qemu-img's); after that only changed slices are written. A
	// new empty table in a fresh cluster (never written: it reads as zeros) is the exception
	// when the table has several slices: only the slices whose entries are set are written
	// (docs/allocation.md, "L2 slices").
	if ok || nc.Offset(g) < before || t.slices() == 1 {
		t.markAllDirty()
	}
	img.l2.insertNew(nc, t)
	img.l1.set(i, makeL1Entry(nc.Offset(g), true))
	if ok {
		// The copy must be durable before the L1 entry points at it, and the L1 entry before
		// the shared table's refcount drops.
		err := img.flushL2()
		if err == nil {
			err = img.writeL1Entry(i)
		}
		if err != nil {
			// The switch stays made in memory; the next flush (or batch of frees) writes the
			// copy, then the L1 entry, and only then drops the shared table's count (a
			// transient error leaks nothing; the L1 entry on disk may already point at the
			// copy, so no undo).
			img.deferred = append(img.deferred, deferredFree{c: c, n: 1})
			return 0, nil, err
		}
		img.freeClusters(c, 1, false)
	}
	return nc, t, nil
}

// window is the byte range of a cluster a plan writes: the guest's bytes and the fills.
func (w *cwrite) window() (uint64, uint64) {
	a, b := w.from, w.to
	if !w.skipFill {
		for _, f := range w.fills {
			a, b = min(a, f.a), max(b, f.b)
		}
	}
	return a, b
}

func (w *cwrite) filled() bool { return !w.skipFill && len(w.fills) > 0 }

// execWrite performs the data part of a plan: copy-on-write reads, then one pwrite per run of
// clusters that are contiguous on the host.
func (img *Image) execWrite(p []byte, off uint64, plan *writePlan) error {
	cs := img.geo.ClusterSize()
	zr, canZero := img.data.(zeroRanger)
	for k := range plan.cl {
		w := &plan.cl[k]
		if !w.zeroCOW || !img.zeroCOWBelow(w.gc, w.cowBelow) {
			continue
		}
		if canZero {
			a, b := w.from, w.to
			for _, f := range w.fills {
				a, b = min(a, f.a), max(b, f.b)
			}
			err := zr.ZeroRange(int64(w.host.Add(a)), int64(b-a))
			if err == nil {
				w.skipFill = true
				continue
			}
			if !errors.Is(err, ErrUnsupported) {
				return fmt.Errorf("qcow2: zero the new cluster at %#x: %w", uint64(w.host), err)
			}
		}
		w.skipFill = w.fresh
	}
	for i := 0; i < len(plan.cl); {
		j := i
		a0, b := plan.cl[i].window()
		filled := plan.cl[i].filled()
		for j+1 < len(plan.cl) {
			na, nb := plan.cl[j+1].window()
			if b != cs || na != 0 || plan.cl[j+1].host != plan.cl[j].host.Add(cs) {
				break
			}
			j++
			b = nb
			filled = filled || plan.cl[j].filled()
		}
		first, last := &plan.cl[i], &plan.cl[j]
		hostStart := first.host.Add(a0)
		length := uint64(last.host.Add(b)) - uint64(hostStart)
		gStart := uint64(first.gc.Offset(img.geo)) + first.from - off
		gEnd := uint64(last.gc.Offset(img.geo)) + last.to - off
		var buf []byte
		if !filled && first.from == a0 && last.to == b {
			buf = p[gStart:gEnd]
		} else {
			buf = make([]byte, length)
			for k := i; k <= j; k++ {
				w := &plan.cl[k]
				base := uint64(w.host) - uint64(hostStart)
				copy(buf[base+w.from:base+w.to], p[uint64(w.gc.Offset(img.geo))+w.from-off:])
				if w.skipFill {
					continue
				}
				var comp []byte
				for _, f := range w.fills {
					if err := img.readOldView(buf[base+f.a:base+f.b], w.gc, w.old, f.a, &comp); err != nil {
						return err
					}
				}
			}
		}
		if _, err := img.data.WriteAt(buf, int64(hostStart)); err != nil {
			return fmt.Errorf("qcow2: write data at %#x: %w", uint64(hostStart), err)
		}
		i = j + 1
	}
	return nil
}

// linkWrite publishes a plan's new mappings (the L2 entries) once its data is written, and
// releases what the old entries pointed at. Called with mu held.
func (img *Image) linkWrite(plan *writePlan) error {
	g := img.geo
	var firstErr error
	for k := range plan.cl {
		w := &plan.cl[k]
		if w.inPlace {
			continue
		}
		idx := w.gc.l2Index(g)
		t, err := img.l2Get(w.l2, idx, idx+1)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			continue
		}
		if cur := t.get(idx); cur != w.old {
			firstErr = cmpErr(firstErr, img.markCorrupt(corruptf("internal: L2 entry of %v changed while it was in flight", w.gc)))
			continue
		}
		if w.newAlloc || img.data == img.file {
			img.checkMappedRefcounts([]hostRange{{w.host, img.geo.ClusterSize()}})
		}
		if img.mustSyncFirst(w) {
			// Before the entry changes: the free below may apply a batch of frees, which
			// writes the L2 tables.
			img.publishData(t)
		}
		t.set(idx, w.next)
		img.l2.markDirty(w.l2)
		if w.freeOld {
			img.freeEntry(w.old, false)
		}
	}
	img.release(plan.busy)
	img.unpin(plan.pin)
	return firstErr
}

// mustSyncFirst reports whether the data of w must be durable before an L2 table mapping it
// is written. Without a FLUSH the guest has no durability promise, so what matters is what a
// crash can expose when the table reaches the disk and the data does not: the cluster's old
// host bytes, read as the guest's cluster. That is harmless only when those bytes are zeros
// (a fresh cluster: never written, inside the file's durable length, which the reservation
// that counted it extended) and zeros are what the guest read there before (no data, no
// backing file showing through). Everything else (a reused cluster with stale data, copy-on-
// write from a backing file, a snapshot's cluster or a compressed one) syncs the data first.
// See flush.go.
func (img *Image) mustSyncFirst(w *cwrite) bool {
	if !w.newAlloc || !w.fresh || img.data != img.file || !img.accurateRefcounts() {
		return true
	}
	s := w.old
	if s.e.Compressed() {
		return true
	}
	if _, has := img.hostOf(s.e); has {
		return true
	}
	if img.backing == nil {
		return false
	}
	if !img.geo.ExtendedL2 {
		return !s.e.Zero()
	}
	newly := w.next.b.Allocated()
	return s.b.zeroBits()&newly != newly
}

// abortWrite undoes a plan whose data could not be written: clusters it allocated are freed
// (nothing points at them), in-flight marks and pins go. Called with mu held.
func (img *Image) abortWrite(plan *writePlan) {
	if plan == nil {
		return
	}
	for _, w := range plan.cl {
		if w.newAlloc {
			img.alloc.free(w.host.cluster(img.geo), 1, false)
		}
	}
	img.release(plan.busy)
	img.unpin(plan.pin)
	plan.busy = slices.Delete(plan.busy, 0, len(plan.busy))
	plan.pin = 0
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
