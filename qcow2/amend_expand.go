// Expanding zero clusters before a downgrade to version 2, which has no zero flag (QEMU's
// qcow2_expand_zero_clusters): the L2 tables of the active L1 table and of every snapshot's
// are walked, and each zero entry becomes zeros stored as data or, without a backing file, an
// unallocated entry (docs/chains.md, "Downgrading with internal snapshots").
package qcow2

import "fmt"

// AmendStatus receives the progress of a long amendment: done of total units of work, called
// at the points where QEMU calls its status callback. nil reports nothing.
type AmendStatus func(done, total int64)

func (s AmendStatus) report(done, total int64) {
	if s != nil {
		s(done, total)
	}
}

// ExpandZeroClusters removes the zero flag from every L2 entry that the active L1 table or a
// snapshot's L1 table reaches, as QEMU does before a downgrade: a zero entry with a
// preallocated cluster gets that cluster zeroed in place; one without gets a new cluster of
// zeros when there is a backing file (which would otherwise show through), and is
// deallocated when there is none. An L2 table shared by k L1 tables is changed once, in
// place, and a new cluster in it counts k references, as QEMU counts them.
//
// One case differs from QEMU on purpose: a preallocated zero cluster that other L2 tables
// also reference (its refcount exceeds its table's) is not zeroed in place, which would
// change what those tables read (qemu-img 7.2 does it, and also marks the entry COPIED with a
// refcount above 1). It is treated as a zero cluster without preallocation, and the old
// cluster loses this table's references once the table is on disk. The active tables' COPIED
// flags are then set from the refcounts.
//
// status gets one step per L1 entry, active table first, then each snapshot's in table order.
//
// Crash safety: for each L2 table changed, the new clusters' refcounts and the zeros are
// durable before the table is written; references dropped from old clusters are dropped after
// it. A crash leaves a version 3 image that reads as before, with leaks at worst.
func (img *Image) ExpandZeroClusters(status AmendStatus) error {
	return img.amendLocked(func() error {
		if err := img.prepareMetadataWrite(); err != nil {
			return err
		}
		x := &zeroExpander{img: img, status: status, backed: img.backing != nil}
		x.total = int64(len(img.l1.entries))
		for _, sn := range img.snapshots {
			if err := checkSnapshotL1(&img.hdr, sn); err != nil {
				return err
			}
			x.total += int64(sn.L1Size)
		}
		if err := x.l1(img.l1.entries); err != nil {
			return err
		}
		for _, sn := range img.snapshots {
			t, err := loadL1(img.file, sn.L1Offset, sn.L1Size)
			if err != nil {
				return err
			}
			if err := x.l1(t.entries); err != nil {
				return err
			}
		}
		if err := img.fixCopied(); err != nil {
			return err
		}
		img.stateChanged()
		return nil
	})
}

// zeroExpander walks L1 tables for ExpandZeroClusters.
type zeroExpander struct {
	img            *Image
	status         AmendStatus
	backed         bool
	visited, total int64
}

// l1 expands the zero entries of every L2 table that the L1 entries name.
func (x *zeroExpander) l1(entries []l1Entry) error {
	for i, e := range entries {
		c, ok, err := x.img.snapL2(i, e)
		if err != nil {
			return x.img.markCorrupt(err)
		}
		if ok {
			if err := x.table(c); err != nil {
				return err
			}
		}
		x.visited++
		x.status.report(x.visited, x.total)
	}
	return nil
}

// table expands the zero entries of the L2 table in cluster c, then writes it. A failure
// before the write forgets the changed table (it was clean: amendLocked flushed) and frees
// the clusters allocated for it, so that the image stays as it was, without leaks.
func (x *zeroExpander) table(c hostCluster) error {
	img, a := x.img, x.img.alloc
	t, err := img.l2GetAll(c)
	if err != nil {
		return err
	}
	l2rc, err := a.refcount(c)
	if err != nil {
		return err
	}
	if l2rc == 0 {
		return img.markCorrupt(corruptf("L2 table in cluster %d is referenced but has refcount 0", c))
	}
	var fresh []hostCluster
	drops, err := x.expand(t, l2rc, &fresh)
	if err == nil && t.ndirty == 0 {
		return nil // no zero entry
	}
	if err == nil {
		err = img.alloc.flush()
	}
	if err == nil {
		if err = img.file.Sync(); err != nil {
			err = fmt.Errorf("qcow2: sync zeroed clusters: %w", err)
		}
	}
	if err != nil {
		x.undo(c, fresh, l2rc)
		return err
	}
	img.l2.markDirty(c)
	if err := img.flushL2(); err != nil {
		return err // the table may be on disk: what it references stays counted
	}
	for _, d := range drops {
		for range l2rc {
			a.free(d, 1, false)
		}
	}
	if len(drops) == 0 {
		return nil
	}
	return a.flush()
}

// undo forgets the L2 table in cluster c, changed in memory only, and frees the clusters
// allocated for it (best effort: a failure leaks them).
func (x *zeroExpander) undo(c hostCluster, fresh []hostCluster, l2rc refcount) {
	img, a := x.img, x.img.alloc
	img.l2.drop(c)
	for _, nc := range fresh {
		for range l2rc {
			a.free(nc, 1, false)
		}
	}
	if err := a.flush(); err != nil {
		img.log.Warn("qcow2: freeing the clusters of a failed zero expansion", "err", err)
	}
}

// expand rewrites the zero entries of t, an L2 table l2rc L1 tables reference, in memory:
// the clusters it allocates go to *fresh; it returns the preallocated clusters shared with
// other tables that t stops referencing.
func (x *zeroExpander) expand(t *l2Table, l2rc refcount, fresh *[]hostCluster) ([]hostCluster, error) {
	img, a, g := x.img, x.img.alloc, x.img.geo
	var drops []hostCluster
	for j := range l2Index(g.l2Entries()) {
		if err := t.check(j); err != nil {
			return nil, img.markCorrupt(err)
		}
		s := t.get(j)
		if !s.e.Zero() {
			continue
		}
		host, prealloc := img.hostOf(s.e)
		if prealloc {
			rc, err := a.refcount(host.cluster(g))
			if err != nil {
				return nil, err
			}
			if rc > l2rc {
				drops = append(drops, host.cluster(g))
				prealloc = false
			}
		}
		if !prealloc && !x.backed {
			t.set(j, slot{})
			continue
		}
		if !prealloc {
			nc, err := a.allocMeta(1, AllocData)
			if err != nil {
				return nil, err
			}
			*fresh = append(*fresh, nc)
			if l2rc > 1 {
				if err := a.setRefcount(nc, l2rc); err != nil {
					return nil, err
				}
			}
			host = nc.Offset(g)
		}
		if err := x.zeroCluster(host); err != nil {
			return nil, err
		}
		t.set(j, slot{e: makeL2Entry(host, l2rc == 1, false)})
	}
	return drops, nil
}

// zeroCluster writes a cluster of zeros at host, a data cluster of the image file.
func (x *zeroExpander) zeroCluster(host HostOffset) error {
	img := x.img
	cs := img.geo.ClusterSize()
	if err := img.checkDataWrite(host, cs); err != nil {
		return err
	}
	for off := uint64(0); off < cs; {
		k := min(cs-off, uint64(len(zeroBuf)))
		if _, err := img.file.WriteAt(zeroBuf[:k], int64(host)+int64(off)); err != nil {
			return fmt.Errorf("qcow2: write zeros at %#x: %w", uint64(host)+off, err)
		}
		off += k
	}
	return nil
}
