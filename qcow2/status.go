// Block status as QEMU's block layer answers it: qcow2_co_block_status plus bdrv_co_block_status
// (per layer), bdrv_block_status_above (the whole chain) and qemu-img map's descent.
package qcow2

import "errors"

// Status is QEMU's block status of one run of guest bytes: the flags and mapping
// bdrv_block_status returns for it, and the layer that answered.
type Status struct {
	Start, Length uint64
	// Data is BDRV_BLOCK_DATA: the layer stores the bytes (compressed clusters included).
	Data bool
	// Zero is BDRV_BLOCK_ZERO: the bytes are known to read as zeros (a zero cluster, a hole of
	// a raw file, a data cluster over a hole of the host file when metadata preallocation was
	// detected, a range no layer allocates, past the end of a shorter backing file).
	Zero bool
	// Allocated is BDRV_BLOCK_ALLOCATED: the layer at Depth answers for the bytes itself.
	Allocated bool
	// HasOffset is BDRV_BLOCK_OFFSET_VALID: Offset locates the run in File. QEMU reports it for
	// data clusters, allocated zero clusters and (extended L2) unallocated subclusters of an
	// allocated cluster, all at their host offset, and for every run of a raw file.
	HasOffset bool
	Offset    HostOffset
	File      string
	// Compressed marks data stored compressed (Data without an offset).
	Compressed bool
	// Depth is the layer that answered: 0 for this image, 1 for its backing file... For a run
	// no layer allocates, the bottom layer.
	Depth int
}

// End is the guest offset just past the run.
func (s Status) End() uint64 { return s.Start + s.Length }

// mergeable reports whether n continues s with the same answer.
func (s Status) mergeable(n Status) bool {
	if s.End() != n.Start || s.Data != n.Data || s.Zero != n.Zero || s.Allocated != n.Allocated ||
		s.HasOffset != n.HasOffset || s.Compressed != n.Compressed || s.Depth != n.Depth || s.File != n.File {
		return false
	}
	return !s.HasOffset || s.Offset.Add(s.Length) == n.Offset
}

// statusList collects runs, merging each with the previous one when it continues it.
type statusList []Status

func (l *statusList) add(s Status) {
	if s.Length == 0 {
		return
	}
	if k := len(*l) - 1; k >= 0 && (*l)[k].mergeable(s) {
		(*l)[k].Length += s.Length
		return
	}
	*l = append(*l, s)
}

// BlockStatus answers bdrv_block_status_above(image, NULL) for [off, off+n): each run's status
// from the first layer of the backing chain that allocates it, or from the bottom layer when
// none does. A range past the end of a shorter backing file is allocated, as zeros, by that
// file (QEMU synthesizes them there). qemu-nbd builds NBD base:allocation from it (HOLE unless
// Data, ZERO when Zero) and qemu:allocation-depth (Depth+1 when Allocated, else 0); the engine
// uses it to tell whether a range reads as zeros (QEMU's is_zero).
func (img *Image) BlockStatus(at GuestOffset, n uint64) ([]Status, error) {
	off := uint64(at)
	return img.chainStatus(off, n, true)
}

// MapStatus answers for [off, off+n) as qemu-img map finds each run: it asks this layer, and
// goes down the backing chain only while a layer says neither Data nor Zero. A range past
// the end of a shorter backing file therefore stays at the layer above it, unallocated and
// Zero.
func (img *Image) MapStatus(at GuestOffset, n uint64) ([]Status, error) {
	off := uint64(at)
	return img.chainStatus(off, n, false)
}

// chainStatus is BlockStatus (above) or MapStatus.
func (img *Image) chainStatus(off, n uint64, above bool) ([]Status, error) {
	img.gate.RLock()
	defer img.gate.RUnlock()
	if err := img.checkRequest(off, n, false); err != nil {
		return nil, err
	}
	return img.chainStatusHeld(off, n, above)
}

// chainStatusHeld is chainStatus for a caller that holds the gate and has checked the range.
func (img *Image) chainStatusHeld(off, n uint64, above bool) ([]Status, error) {
	own, err := img.layerStatus(off, n)
	if err != nil {
		return nil, err
	}
	if img.backing == nil {
		return own, nil
	}
	var out statusList
	bsize := img.backing.layerSize()
	for _, s := range own {
		descend := !s.Allocated
		if !above {
			descend = !s.Data && !s.Zero
		}
		if !descend {
			out.add(s)
			continue
		}
		// Only reached with above: below it, QEMU finds the backing file's end (EOF) and
		// treats the range as allocated zeros of that layer.
		if s.Start >= bsize {
			out.add(Status{Start: s.Start, Length: s.Length, Zero: true, Allocated: true, Depth: 1})
			continue
		}
		sub, err := img.backing.chainStatus(s.Start, min(s.End(), bsize)-s.Start, above)
		if err != nil {
			return nil, err
		}
		for _, b := range sub {
			b.Depth++
			out.add(b)
		}
		if s.End() > bsize {
			// layerStatus split this image's runs at the backing file's end, so this
			// cannot happen; kept for safety.
			out.add(Status{Start: bsize, Length: s.End() - bsize, Zero: true, Allocated: above, Depth: boolInt(above)})
		}
	}
	return out, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// layerStatus answers bdrv_co_block_status for this image alone, with what the block layer adds
// to the qcow2 driver's answer (want_zero):
//
//	data cluster or subcluster            Data, offset (host)
//	compressed cluster                    Data
//	zero cluster, allocated               Zero, offset (host)
//	zero cluster or subcluster, plain     Zero
//	unallocated subcluster of an
//	  allocated cluster (extended L2)     offset (host)
//	unallocated                           -
//
// Data and Zero make a run Allocated. An unallocated run is Zero when there is no backing
// file, or when it starts at or past the backing file's end (QEMU checks the start of a run;
// runs are split there so that each part gets its answer). With metadata preallocation
// detected (QEMU's qcow2_detect_metadata_preallocation), a data run is looked up in its host
// file: where that is a hole (or past its end) the run is Zero too.
func (img *Image) layerStatus(off, n uint64) ([]Status, error) {
	var out statusList
	for pos := off; pos < off+n; {
		k := min(off+n-pos, maxPlanBytes)
		img.mu.Lock()
		if img.closed {
			img.mu.Unlock()
			return nil, ErrClosed
		}
		var err error
		out, err = img.l2Status(pos, k, out)
		recurse := false
		if err == nil {
			recurse, err = img.metadataPreallocated()
		}
		img.trimCaches()
		if err != nil {
			err = img.fail(err)
		}
		img.mu.Unlock()
		if err != nil {
			return nil, err
		}
		pos += k
		if recurse {
			out = img.refineHostHoles(out)
		}
	}
	if img.backing != nil {
		out = splitAt(out, img.backing.layerSize())
	}
	return out, nil
}

// l2Status appends the driver's answer for [off, off+n) (one plan's worth), with mu held.
func (img *Image) l2Status(off, n uint64, out statusList) (statusList, error) {
	g := img.geo
	cs := g.ClusterSize()
	scs := g.subclusterSize()
	end := off + n
	unalloc := Status{Zero: img.backing == nil}
	dataFile := img.dataFileName()
	for pos := off; pos < end; {
		l1i := GuestOffset(pos).l1Index(g)
		stop := min(end, uint64(l1i.firstCluster(g).Offset(g))+g.guestBytesPerL2())
		c, ok, err := img.l2For(l1i)
		if err != nil {
			return out, err
		}
		if !ok {
			s := unalloc
			s.Start, s.Length = pos, stop-pos
			out.add(s)
			pos = stop
			continue
		}
		lo, hi := g.l2Span(pos, stop)
		t, err := img.l2Get(c, lo, hi)
		if err != nil {
			return out, err
		}
		for pos < stop {
			gc := GuestOffset(pos).cluster(g)
			if err := t.check(gc.l2Index(g)); err != nil {
				return out, err
			}
			sl := t.get(gc.l2Index(g))
			in := GuestOffset(pos).inCluster(g)
			cend := min(cs, in+(stop-pos))
			if sl.e.Compressed() {
				out.add(Status{Start: pos, Length: cend - in, Data: true, Allocated: true, Compressed: true})
				pos += cend - in
				continue
			}
			host, has := img.hostOf(sl.e)
			for in < cend {
				sc := uint32(in / scs)
				scEnd := min(cend, uint64(sc+1)*scs)
				s := Status{Start: pos, Length: scEnd - in}
				switch img.subKind(sl, sc) {
				case kindData:
					s.Data, s.Allocated = true, true
					s.HasOffset, s.Offset, s.File = true, host.Add(in), dataFile
				case kindZero:
					s.Zero, s.Allocated = true, true
					// QEMU: ZERO_ALLOC (a zero flag on an entry with a host offset, or a
					// zero subcluster of an allocated cluster) keeps its offset.
					if sl.e.Offset() != 0 || (g.ExtendedL2 && has) {
						s.HasOffset, s.Offset, s.File = true, host.Add(in), dataFile
					}
				default:
					s.Zero = unalloc.Zero
					if g.ExtendedL2 && has {
						s.HasOffset, s.Offset, s.File = true, host.Add(in), dataFile
					}
				}
				out.add(s)
				pos += scEnd - in
				in = scEnd
			}
		}
	}
	return out, nil
}

// splitAt splits the unallocated runs that cross the backing file's end, marking the part at
// or past it Zero (bdrv_co_block_status: "offset >= size of the backing file").
func splitAt(in statusList, bsize uint64) statusList {
	var out statusList
	for _, s := range in {
		if s.Allocated || s.End() <= bsize {
			out = append(out, s)
			continue
		}
		if s.Start < bsize {
			head := s
			head.Length = bsize - s.Start
			out = append(out, head)
			s.Offset = s.Offset.Add(head.Length)
			s.Start, s.Length = bsize, s.End()-bsize
		}
		s.Zero = true
		out = append(out, s)
	}
	return out
}

// refineHostHoles is the block layer's BDRV_BLOCK_RECURSE step for a metadata-preallocated
// image: each data run with an offset is looked up in its host file (file-posix's block
// status), and where the host has a hole the run is reported Zero as well as Data. A hole
// that reaches the end of the host file (or a run starting past it) makes the rest of the run
// Zero, as QEMU reads past the end of a file as zeros.
func (img *Image) refineHostHoles(in statusList) statusList {
	var out statusList
	for _, s := range in {
		if !s.Data || !s.HasOffset || s.Zero {
			out.add(s)
			continue
		}
		for s.Length > 0 {
			n, zero := hostStatus(img.data, uint64(s.Offset), s.Length)
			part := s
			part.Length = n
			part.Zero = zero
			out.add(part)
			s.Start, s.Offset, s.Length = s.Start+n, s.Offset.Add(n), s.Length-n
		}
	}
	return out
}

// hostStatus is what file-posix answers for [off, off+n) of a host file, as the RECURSE step
// uses it: the length of the first run and whether it reads as zeros (a hole, or a hole that
// runs to the end of the file, after which everything is zeros). A store that cannot report
// holes, or an error, is all data.
func hostStatus(s Storage, off, n uint64) (uint64, bool) {
	size, err := s.Size()
	if err != nil {
		return n, false
	}
	total := alignUp(uint64(size), 512) // bdrv_getlength counts whole sectors
	if off >= total {
		return n, true
	}
	fa, ok := s.(allocationFinder)
	if !ok {
		return n, false
	}
	limit := min(n, total-off)
	data, hole, err := fa.FindAllocation(int64(off))
	switch {
	case errors.Is(err, errNoMoreData):
		return n, true // a hole to the end of the file: zeros, also past it
	case err != nil:
		return limit, false
	case uint64(data) == off && uint64(hole) > off:
		return min(uint64(hole)-off, limit), false
	case uint64(hole) != off || uint64(data) <= off:
		return limit, false // not a valid answer: all data, as QEMU treats it
	default:
		run := uint64(data) - off
		if run >= limit {
			if off+limit == total {
				return n, true
			}
			return limit, true
		}
		return run, true
	}
}

// isZero is QEMU's is_zero (qcow2.c): whether [off, off+n), cut at the end of the image,
// reads as zeros by block status through the whole chain. Called with the gate held.
func (img *Image) isZero(off, n uint64) (bool, error) {
	size := img.size.Load()
	if off >= size {
		return true, nil
	}
	n = min(n, size-off)
	if n == 0 {
		return true, nil
	}
	st, err := img.chainStatusHeld(off, n, true)
	if err != nil {
		return false, err
	}
	for _, s := range st {
		if !s.Zero {
			return false, nil
		}
	}
	return true, nil
}
