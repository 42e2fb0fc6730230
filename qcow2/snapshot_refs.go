// Snapshot reference walks: raising or dropping the refcount of every cluster an L1 table
// reaches, and setting the active tables' COPIED flags from the refcounts (QEMU's
// qcow2_update_snapshot_refcount, split into its passes). docs/snapshots.md states the order.
package qcow2

import (
	"fmt"
	"syscall"
)

// refAddend is what a reference walk does to each refcount it meets.
type refAddend int

const (
	refDrop  refAddend = -1 // a table stops referencing: refcounts -1, freed at 0
	refRaise refAddend = 1  // a table starts referencing: refcounts +1
)

// snapL2 validates an L1 entry of any L1 table (active or a snapshot's) and returns its L2
// table's cluster, or false when the entry maps nothing.
func (img *Image) snapL2(i int, e l1Entry) (hostCluster, bool, error) {
	off := e.l2Offset()
	if e.reserved() != 0 {
		return 0, false, corruptf("L1 index %d (entry %#016x): reserved bits set", i, uint64(e))
	}
	if off == 0 {
		return 0, false, nil
	}
	c, ok := off.checkedCluster(img.geo)
	if !ok || uint64(off)+img.geo.ClusterSize() > img.fileEnd() {
		return 0, false, corruptf("L1 index %d: L2 table offset %#x invalid", i, uint64(off))
	}
	if what := img.overlapsFixed(off, img.geo.ClusterSize()); what != "" {
		return 0, false, corruptf("L1 index %d: L2 table at %#x overlaps the %s", i, uint64(off), what)
	}
	return c, true, nil
}

// entryClusters returns the host clusters of the image file an L2 entry references (a data
// or preallocated zero cluster, or the clusters a compressed range touches), n == 0 for none.
func (img *Image) entryClusters(s slot) (first hostCluster, n ClusterCount) {
	g := img.geo
	if s.e.Compressed() {
		off, l := s.e.compressedRange(g)
		lo, hi := off.cluster(g), off.Add(l-1).cluster(g)
		return lo, ClusterCount(hi - lo + 1)
	}
	host, ok := img.hostOf(s.e)
	if !ok || img.data != img.file {
		return 0, 0
	}
	return host.cluster(g), 1
}

// addRefs applies add to the refcount of every cluster that the L1 entries reach: each L2
// table and every cluster its entries reference. Called with mu held; the changes stay in the
// refcount cache until the caller flushes it. A drop frees (and punches, as QEMU's
// discard-snapshot does) what reaches zero.
//
// A raise that cannot be made (a refcount at its maximum, as with refcount_bits=1) is undone
// in memory and fails with EINVAL, as QEMU's update_refcount reverts its partial update.
func (img *Image) addRefs(entries []l1Entry, add refAddend) (err error) {
	a := img.alloc
	var raised []hostCluster
	defer func() {
		if err == nil || add != refRaise {
			return
		}
		for _, c := range raised {
			if rc, rerr := a.refcount(c); rerr == nil && rc > 0 {
				_ = a.setRefcount(c, rc-1)
			}
		}
	}()
	bump := func(c hostCluster, n ClusterCount) error {
		for k := range n {
			cl := c.Add(k)
			if add == refDrop {
				a.free(cl, 1, true)
				if img.corrupt != nil {
					return img.corrupt
				}
				continue
			}
			rc, err := a.refcount(cl)
			if err != nil {
				return err
			}
			if rc == 0 {
				return img.markCorrupt(corruptf("snapshot: cluster %d is referenced but has refcount 0", cl))
			}
			if rc >= a.g.maxRefcount() {
				return fmt.Errorf("qcow2: refcount of cluster %d would overflow %d bits: %w", cl, a.g.RefcountBits(), syscall.EINVAL)
			}
			if err := a.setRefcount(cl, rc+1); err != nil {
				return err
			}
			raised = append(raised, cl)
		}
		return nil
	}
	for i, e := range entries {
		c, ok, err := img.snapL2(i, e)
		if err != nil {
			return img.markCorrupt(err)
		}
		if !ok {
			continue
		}
		t, err := img.l2GetAll(c)
		if err != nil {
			return err
		}
		for j := range l2Index(img.geo.l2Entries()) {
			if err := t.check(j); err != nil {
				return img.markCorrupt(err)
			}
			if first, n := img.entryClusters(t.get(j)); n > 0 {
				if err := bump(first, n); err != nil {
					return err
				}
			}
		}
		if err := bump(c, 1); err != nil {
			return err
		}
	}
	return nil
}

// fixCopied sets the COPIED flag of every active L1 and L2 entry to "refcount is 1"
// (addend 0 of qcow2_update_snapshot_refcount), in the caches, then writes the changed L2
// tables and L1 entries and syncs. Compressed entries and data in an external data file keep
// their flags.
func (img *Image) fixCopied() error {
	a := img.alloc
	for i, e := range img.l1.entries {
		c, ok, err := img.snapL2(i, e)
		if err != nil {
			return img.markCorrupt(err)
		}
		if !ok {
			continue
		}
		t, err := img.l2GetAll(c)
		if err != nil {
			return err
		}
		changed := false
		for j := range l2Index(img.geo.l2Entries()) {
			s := t.get(j)
			if s.e.Compressed() {
				continue
			}
			first, n := img.entryClusters(s)
			if n == 0 {
				continue
			}
			rc, err := a.refcount(first)
			if err != nil {
				return err
			}
			if want := rc == 1; want != s.e.copied() {
				s.e ^= l2Entry(entryCopied)
				t.set(j, s)
				changed = true
			}
		}
		if changed {
			img.l2.markDirty(c)
		}
		rc, err := a.refcount(c)
		if err != nil {
			return err
		}
		if want := rc == 1; want != e.copied() {
			img.l1.set(l1Index(i), e^l1Entry(entryCopied))
		}
	}
	if err := img.flushL2(); err != nil {
		return err
	}
	if len(img.l1.dirty) > 0 {
		if err := img.writeL1Dirty(); err != nil {
			return err
		}
		if err := img.file.Sync(); err != nil {
			return fmt.Errorf("qcow2: sync L1 table: %w", err)
		}
	}
	return nil
}
