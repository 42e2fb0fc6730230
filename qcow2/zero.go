// Write zeroes as QEMU does it: bdrv_co_do_pwrite_zeroes' split and bounce-buffer fallback
// around qcow2_co_pwrite_zeroes and qcow2_subcluster_zeroize.
package qcow2

import (
	"errors"
	"fmt"
)

// ZeroFlags say how Zero may make a range read as zeros (QEMU's BdrvRequestFlags).
type ZeroFlags uint8

const (
	// ZeroMayUnmap (BDRV_REQ_MAY_UNMAP) lets allocated clusters be released; without it they
	// keep their host cluster (NBD_CMD_FLAG_NO_HOLE, or an export without discard=unmap).
	// Version 2 images ignore it, as QEMU does (their driver offers no flags).
	ZeroMayUnmap ZeroFlags = 1 << iota
	// ZeroNoFallback (BDRV_REQ_NO_FALLBACK, NBD_CMD_FLAG_FAST_ZERO) fails with ErrSlowZero
	// instead of writing zero bytes. As in QEMU, the pieces of the request before the one that
	// needs writing are zeroed already when it fails; a version 2 image fails at once.
	ZeroNoFallback
)

// Zero makes [off, off+n) read as zeros the way QEMU's block layer and qcow2 driver do it, so
// that the image ends up mapped as QEMU would leave it:
//
//   - The range is cut at subcluster boundaries: an unaligned head, the aligned middle, an
//     unaligned tail (the last piece may end at the end of the image).
//   - Aligned pieces of a version 3 image get the zero flag (zero bits with extended L2) on
//     every cluster, allocated or not, the L2 tables they need included; allocated clusters
//     keep their host cluster unless ZeroMayUnmap (compressed ones never do).
//   - A version 2 image has no zero flag: without a backing file the clusters are
//     deallocated (whatever the flags); with one, the piece is written as zeros.
//   - An unaligned piece zeroes its whole subcluster the same way when the rest of the
//     subcluster reads as zeros (through the backing chain) and the subcluster is unallocated
//     or zero; otherwise it is written as zeros.
//   - Pieces written as zeros are ordinary writes (they allocate, copy-on-write around them).
//
// With a raw external data file its bytes are zeroed too, first. Zeros promised here never
// expose backing data.
func (img *Image) Zero(at GuestOffset, n uint64, f ZeroFlags) error {
	off := uint64(at)
	img.gate.RLock()
	defer img.gate.RUnlock()
	if err := img.checkRequest(off, n, true); err != nil {
		return err
	}
	img.markDirty(off, n)
	if err := img.zero(off, n, f); err != nil {
		return err
	}
	if img.opts.WriteThrough {
		return img.flush()
	}
	return nil
}

// zero is bdrv_co_do_pwrite_zeroes for callers that hold the gate.
func (img *Image) zero(off, n uint64, f ZeroFlags) error {
	if n == 0 {
		return nil
	}
	if img.hdr.Version < 3 {
		// QEMU's qcow2 driver offers no zero flags for version 2 (supported_zero_flags 0).
		if f&ZeroNoFallback != 0 {
			return ErrSlowZero
		}
		f &^= ZeroMayUnmap
	}
	align := img.geo.subclusterSize()
	head, tail := off%align, (off+n)%align
	for n > 0 {
		num := n
		if head != 0 {
			num = min(n, align-head)
			head = (head + num) % align
		} else if tail != 0 && num > align {
			num -= tail
		}
		err := img.zeroPiece(off, num, f)
		if errors.Is(err, errNeedFallback) {
			if f&ZeroNoFallback != 0 {
				return ErrSlowZero
			}
			err = img.writeZeroRange(off, num)
		}
		if err != nil {
			return err
		}
		off, n = off+num, n-num
	}
	return nil
}

// zeroPiece is qcow2_co_pwrite_zeroes for one piece: errNeedFallback asks for written zeros.
func (img *Image) zeroPiece(off, n uint64, f ZeroFlags) error {
	sc := img.geo.subclusterSize()
	size := img.size.Load()
	head := off % sc
	tail := alignUp(off+n, sc) - (off + n)
	if off+n == size {
		tail = 0
	}
	if head == 0 && tail == 0 {
		return img.zeroize(off, n, f, false)
	}
	// One piece inside one subcluster: zero the whole subcluster if the rest of it reads as
	// zeros already and it is unallocated or zero (checked again under the lock).
	for _, r := range [][2]uint64{{off - head, head}, {off + n, tail}} {
		z, err := img.isZero(r[0], r[1])
		if err != nil {
			return err
		}
		if !z {
			return errNeedFallback
		}
	}
	return img.zeroize(off-head, sc, f, true)
}

// zeroize is qcow2_subcluster_zeroize: off is subcluster aligned, and so is off+n unless it
// reaches the end of the image. onlyIfZero: the range is one subcluster that must still be
// unallocated or zero (else errNeedFallback, nothing changed).
func (img *Image) zeroize(off, n uint64, f ZeroFlags, onlyIfZero bool) error {
	g := img.geo
	cs := g.ClusterSize()
	size := img.size.Load()
	end := off + n
	if img.dataRaw {
		// The raw data file must read as zeros there too (QEMU zeroes it first).
		if err := img.zeroRawData(off, min(end, size)-off, f); err != nil {
			return err
		}
	}
	if img.hdr.Version < 3 {
		if img.backing != nil {
			return errNeedFallback
		}
		if onlyIfZero && !img.subclusterIsZero(off) {
			return errNeedFallback
		}
		// Without a zero flag, but with nothing behind: deallocate (QEMU's discard).
		return img.discardClusters(alignDown(off, cs), alignUp(min(end, size), cs), false)
	}
	head := min(end, alignUp(off, cs)) - off
	whole := off + head
	tail := uint64(0)
	if end < size {
		tail = end - max(whole, alignDown(end, cs))
	}
	stop := end - tail
	if head > 0 {
		if err := img.zeroSubclusters(off, head, onlyIfZero); err != nil {
			return err
		}
	}
	if whole < stop {
		err := img.forEachTable(whole, stop, func(l1i l1Index, from, to uint64) error {
			return img.zeroClusters(l1i, from, to, f, onlyIfZero)
		})
		if err != nil {
			return err
		}
	}
	if tail > 0 {
		return img.zeroSubclusters(stop, tail, false)
	}
	return nil
}

func alignUp(v, a uint64) uint64   { return (v + a - 1) / a * a }
func alignDown(v, a uint64) uint64 { return v / a * a }

// qemuClusterType is QEMU's qcow2_get_cluster_type of an L2 entry.
type qemuClusterType uint8

const (
	ctUnallocated qemuClusterType = iota
	ctZeroPlain
	ctZeroAlloc
	ctNormal
	ctCompressed
)

func (img *Image) clusterType(e l2Entry) qemuClusterType {
	switch {
	case e.Compressed():
		return ctCompressed
	case e.Zero() && !img.geo.ExtendedL2:
		if e.Offset() != 0 {
			return ctZeroAlloc
		}
		return ctZeroPlain
	case e.Offset() == 0:
		// Offset 0 is a cluster of an external data file when COPIED is set.
		if img.data != img.file && e.copied() {
			return ctNormal
		}
		return ctUnallocated
	}
	return ctNormal
}

// allocated is qcow2_cluster_is_allocated.
func (t qemuClusterType) allocated() bool {
	return t == ctNormal || t == ctZeroAlloc || t == ctCompressed
}

// subclusterIsZero reports, with mu not held, whether the subcluster at off is unallocated or
// zero (the type check of qcow2_co_pwrite_zeroes), for version 2 images.
func (img *Image) subclusterIsZero(off uint64) bool {
	img.mu.Lock()
	defer img.mu.Unlock()
	ext, _, err := img.mapRead(off, 1, nil)
	return err == nil && len(ext) == 1 && (ext[0].kind == kindUnallocated || ext[0].kind == kindZero)
}

// zeroSubclusters is zero_l2_subclusters: the n bytes (whole subclusters) at off lie inside
// one cluster, which gets their zero bits and loses their allocation bits (it stays
// allocated); a compressed cluster cannot be zeroed in part.
func (img *Image) zeroSubclusters(off, n uint64, onlyIfZero bool) error {
	g := img.geo
	return img.forEachTable(off, off+n, func(l1i l1Index, from, to uint64) error {
		gc := GuestOffset(from).cluster(g)
		old, err := img.entryAt(l1i, gc)
		if err != nil {
			return err
		}
		if old.e.Compressed() {
			return errNeedFallback
		}
		in := GuestOffset(from).inCluster(g)
		mask := g.scMask(in, in+(to-from))
		if onlyIfZero && img.subKind(old, uint32(in/g.subclusterSize())) != kindUnallocated &&
			img.subKind(old, uint32(in/g.subclusterSize())) != kindZero {
			return errNeedFallback
		}
		nw := slot{e: old.e, b: makeSubclusterBitmap(old.b.Allocated()&^mask, old.b.zeroBits()|mask)}
		if nw == old {
			return nil
		}
		key, t, err := img.l2ForWrite(l1i, gc.l2Index(g), gc.l2Index(g)+1)
		if err != nil {
			return err
		}
		t.set(gc.l2Index(g), nw)
		img.l2.markDirty(key)
		return nil
	})
}

// entryAt returns the L2 entry of gc (zero when its table is not allocated), with mu held.
func (img *Image) entryAt(l1i l1Index, gc guestCluster) (slot, error) {
	key, ok, err := img.l2For(l1i)
	if err != nil || !ok {
		return slot{}, err
	}
	i := gc.l2Index(img.geo)
	t, err := img.l2Get(key, i, i+1)
	if err != nil {
		return slot{}, err
	}
	if err := t.check(gc.l2Index(img.geo)); err != nil {
		return slot{}, err
	}
	return t.get(gc.l2Index(img.geo)), nil
}

// zeroClusters is zero_in_l2_slice for the whole clusters of [from, to) in the table of l1i
// (the last one may end at the end of the image): every cluster gets the zero flag (all zero
// bits with extended L2); an allocated one is released when unmap is allowed, a compressed
// one always. The L2 table is created (or copied from a snapshot's) when needed, as QEMU's
// get_cluster_table does.
func (img *Image) zeroClusters(l1i l1Index, from, to uint64, f ZeroFlags, onlyIfZero bool) error {
	g := img.geo
	cs := g.ClusterSize()
	unmapOK := f&ZeroMayUnmap != 0
	var key hostCluster
	var t *l2Table
	for pos := from; pos < to; pos += cs {
		gc := GuestOffset(pos).cluster(g)
		var old slot
		if t == nil {
			var err error
			if old, err = img.entryAt(l1i, gc); err != nil {
				return err
			}
		} else {
			if err := t.check(gc.l2Index(g)); err != nil {
				return err
			}
			old = t.get(gc.l2Index(g))
		}
		if onlyIfZero {
			if k := img.subKind(old, 0); k != kindUnallocated && k != kindZero {
				return errNeedFallback
			}
		}
		typ := img.clusterType(old.e)
		unmap := typ == ctCompressed || (unmapOK && typ.allocated())
		nw := old
		if unmap {
			nw.e = 0
		}
		if g.ExtendedL2 {
			nw.b = makeSubclusterBitmap(0, allSubclusters)
		} else {
			nw.e |= l2Entry(l2Zero)
		}
		if nw == old {
			continue
		}
		if t == nil {
			var err error
			lo, hi := g.l2Span(from, to)
			if key, t, err = img.l2ForWrite(l1i, lo, hi); err != nil {
				return err
			}
		}
		t.set(gc.l2Index(g), nw)
		img.l2.markDirty(key)
		if unmap {
			img.freeEntry(old, true)
		}
	}
	return nil
}

// forEachTable calls fn with mu held for each L2 table's part of [from, to), after waiting
// (without the lock) until no cluster of that part is in flight.
func (img *Image) forEachTable(from, to uint64, fn func(l1i l1Index, from, to uint64) error) error {
	g := img.geo
	for pos := from; pos < to; {
		l1i := GuestOffset(pos).l1Index(g)
		stop := min(to, uint64(l1i.firstCluster(g).Offset(g))+g.guestBytesPerL2())
		img.mu.Lock()
		if err := img.prepareWrite(); err != nil {
			img.mu.Unlock()
			return err
		}
		if ch := img.waitBusy(GuestOffset(pos).cluster(g), GuestOffset(stop-1).cluster(g)); ch != nil {
			img.mu.Unlock()
			<-ch
			continue
		}
		err := fn(l1i, pos, stop)
		if err != nil && !errors.Is(err, errNeedFallback) {
			err = img.fail(err)
		}
		img.trimCaches()
		img.mu.Unlock()
		if err != nil {
			return err
		}
		pos = stop
	}
	return nil
}

// writeZeroRange writes zero bytes over [off, off+n): QEMU's bounce-buffer fallback, an
// ordinary write.
func (img *Image) writeZeroRange(off, n uint64) error {
	for n > 0 {
		k := min(n, uint64(len(zeroBuf)))
		if err := img.writeAt(zeroBuf[:k], off); err != nil {
			return fmt.Errorf("qcow2: write zeros at %d: %w", off, err)
		}
		off, n = off+k, n-k
	}
	return nil
}
