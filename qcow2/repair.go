// The comparing and repairing half of Check: stored refcounts against counted references, the
// COPIED flags, and the in-place repairs (QEMU's compare_refcounts, check_oflag_copied).
package qcow2

import (
	"encoding/binary"
	"fmt"
)

// checkCounters are the counters of a CheckResult, saved and restored around re-runs.
type checkCounters struct{ corruptions, leaks, checkErrors, corruptionsFixed, leaksFixed int }

func (r *CheckResult) counters() checkCounters {
	return checkCounters{r.Corruptions, r.Leaks, r.CheckErrors, r.CorruptionsFixed, r.LeaksFixed}
}

func (r *CheckResult) setCounters(k checkCounters) {
	r.Corruptions, r.Leaks, r.CheckErrors, r.CorruptionsFixed, r.LeaksFixed =
		k.corruptions, k.leaks, k.checkErrors, k.corruptionsFixed, k.leaksFixed
}

// run is qcow2_check_refcounts followed by the COPIED check: count, compare, repair what the
// mode allows (rebuilding the refcount structures if they are broken and the mode is
// RepairAll), then check the COPIED flags against the (repaired) refcounts.
func (c *checker) run() error {
	if err := c.readSnapshotTable(); err != nil {
		return err
	}
	c.res.TotalClusters = uint64(c.g.clustersFor(c.h.Size))
	if err := c.calculate(c.mode); err != nil {
		return err
	}
	pre := c.res.counters()
	highest, err := c.compare(RepairNone)
	if err != nil {
		return err
	}
	final := c
	switch {
	case c.rebuild && c.mode == RepairAll:
		if final, highest, err = c.rebuildAndRecount(); err != nil {
			return err
		}
	case c.mode != RepairNone && c.rebuild:
		c.res.CheckErrors++
		c.res.msg("ERROR need to rebuild refcount structures")
		return errNeedRebuild
	case c.mode != RepairNone && (c.res.Leaks > 0 || c.res.Corruptions > 0):
		// Compare again, this time repairing; the first run's findings are replaced.
		c.res.setCounters(pre)
		if highest, err = c.compare(c.mode); err != nil {
			return err
		}
	}
	if err := final.checkCopied(c.mode); err != nil {
		return err
	}
	c.res.ImageEndOffset = (uint64(highest) + 1) * c.cs
	return nil
}

// compare compares the stored refcount of every cluster below the end of the file with the
// references counted, repairing the difference where fix allows: leaks from RepairLeaks on,
// refcounts that are too low with RepairAll. A stored refcount of 0 under a referenced
// cluster cannot be repaired in place (the refcount block may not even exist): it calls for a
// rebuild. It returns the highest cluster that is referenced or has a refcount.
func (c *checker) compare(fix RepairMode) (hostCluster, error) {
	var highest hostCluster
	n := max(c.nb, c.refs.n)
	per := c.g.refBlockEntries()
	changed := false
	for base := uint64(0); base < n; base += per {
		end := min(base+per, n)
		blk, err := c.disk.block(hostCluster(base).refTableIndex(c.g))
		if err != nil {
			for cl := base; cl < end; cl++ {
				c.res.CheckErrors++
				c.res.msg("Can't get refcount for cluster %d: %v", cl, err)
			}
			continue
		}
		if blk.Data == nil && !c.refs.nonZeroIn(hostCluster(base), hostCluster(end)) {
			continue
		}
		for cl := hostCluster(base); cl < hostCluster(end); cl++ {
			var stored refcount
			if blk.Data != nil {
				stored = blk.Get(cl.refBlockIndex(c.g))
			}
			refs := c.refs.get(cl)
			if stored > 0 || refs > 0 {
				highest = cl
			}
			if stored == refs {
				continue
			}
			var fixed *int
			switch {
			case stored == 0:
				c.rebuild = true
			case stored > refs && fix >= RepairLeaks:
				fixed = &c.res.LeaksFixed
			case stored < refs && fix == RepairAll:
				fixed = &c.res.CorruptionsFixed
			}
			word := "Leaked"
			switch {
			case fixed != nil:
				word = "Repairing"
			case stored < refs:
				word = "ERROR"
			}
			c.res.msg("%s cluster %d refcount=%d reference=%d", word, uint64(cl), stored, refs)
			if fixed != nil {
				if err := c.disk.set(cl, refs); err == nil {
					*fixed++
					changed = true
					continue
				} else {
					c.res.msg("ERROR could not repair cluster %d: %v", uint64(cl), err)
				}
			}
			if stored < refs {
				c.res.Corruptions++
			} else {
				c.res.Leaks++
			}
		}
	}
	if changed {
		if err := c.disk.flush(); err != nil {
			c.res.CheckErrors++
			c.res.msg("ERROR: %v", err)
			return highest, err
		}
		if err := c.s.Sync(); err != nil {
			c.res.CheckErrors++
			return highest, fmt.Errorf("qcow2: sync after refcount repair: %w", err)
		}
	}
	return highest, nil
}

// checkCopied checks the COPIED flag of every active L1 and L2 entry against the stored
// refcount (set exactly when it is 1) and repairs it with RepairAll, or with RepairLeaks when
// the refcounts are now known to be right. Like QEMU it looks at the active tables only: the
// flag means nothing in a snapshot's tables. An L2 table that several L1 entries point at is
// read once; its wrong flags count once per L1 entry, as in QEMU, or are repaired once.
func (c *checker) checkCopied(fix RepairMode) error {
	repair := fix == RepairAll ||
		(fix == RepairLeaks && c.res.CheckErrors == 0 && c.res.Corruptions == 0 && c.res.Leaks == 0)
	l1, err := c.readActiveL1()
	if err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: Could not read L1 table: %v", err)
		return err
	}
	wrote := false
	refs := map[HostOffset]uint64{}
	var order []HostOffset
	for i, e := range l1 {
		l2 := e.l2Offset()
		if l2 == 0 {
			continue
		}
		if refs[l2] == 0 {
			order = append(order, l2)
		}
		refs[l2]++
		rc, err := c.disk.get(l2.cluster(c.g))
		if err != nil {
			c.refcountReadFailed(l2.cluster(c.g), err)
			continue
		}
		if (rc == 1) == e.copied() {
			continue
		}
		c.corrupt("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d", repairWord(repair), i, uint64(e), rc)
		if repair {
			ne := makeL1Entry(l2, rc == 1) | l1Entry(e.reserved())
			var b [l1EntrySize]byte
			binary.BigEndian.PutUint64(b[:], uint64(ne))
			if _, err := c.s.WriteAt(b[:], int64(uint64(c.h.L1TableOffset)+uint64(i)*l1EntrySize)); err != nil {
				c.res.CheckErrors++
				return fmt.Errorf("qcow2: write L1 entry %d: %w", i, err)
			}
			wrote = true
			c.res.Corruptions--
			c.res.CorruptionsFixed++
		}
	}
	for _, l2 := range order {
		w, err := c.checkCopiedL2(l2, refs[l2], repair)
		wrote = wrote || w
		if err != nil {
			return err
		}
	}
	if wrote {
		if err := c.s.Sync(); err != nil {
			c.res.CheckErrors++
			return fmt.Errorf("qcow2: sync after COPIED repair: %w", err)
		}
	}
	return nil
}

// checkCopiedL2 checks the COPIED flags of one active L2 table that n L1 entries point at, and
// reports whether it wrote the table back.
func (c *checker) checkCopiedL2(l2 HostOffset, n uint64, repair bool) (bool, error) {
	buf := c.l2buf
	if err := readAtZero(c.s, buf, uint64(l2), c.fileSize); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: Could not read L2 table: %v", err)
		return false, err
	}
	dataFile := c.h.HasDataFile()
	dirty := 0
	es := c.g.l2EntrySize()
	for j := uint64(0); j < c.l2EntriesInFile(l2); j++ {
		e, _ := c.l2Entry(buf, j)
		if t := c.clusterType(e); t != chkNormal && t != chkZeroAlloc {
			continue
		}
		rc := refcount(1) // clusters in an external data file always have refcount 1
		if !dataFile {
			var err error
			if rc, err = c.disk.get(e.Offset().cluster(c.g)); err != nil {
				c.refcountReadFailed(e.Offset().cluster(c.g), err)
				continue
			}
		}
		if (rc == 1) == e.copied() {
			continue
		}
		if !repair {
			c.corruptW(n, "ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", uint64(e), rc)
			continue
		}
		c.res.msg("Repairing OFLAG_COPIED data cluster: l2_entry=%x refcount=%d", uint64(e), rc)
		ne := uint64(e) &^ entryCopied
		if rc == 1 {
			ne |= entryCopied
		}
		binary.BigEndian.PutUint64(buf[j*es:], ne)
		dirty++
	}
	if dirty == 0 {
		return false, nil
	}
	if what := c.overlapsMetadata(l2, c.cs, true); what != "" {
		c.res.CheckErrors++
		c.res.Corruptions += dirty
		c.res.msg("ERROR: Could not write L2 table; metadata overlap check failed: it lies in the %s", what)
		return false, corruptf("L2 table at %#x overlaps the %s", uint64(l2), what)
	}
	if _, err := c.s.WriteAt(buf[:min(c.cs, c.fileSize-uint64(l2))], int64(l2)); err != nil {
		c.res.CheckErrors++
		c.res.Corruptions += dirty
		c.res.msg("ERROR: Could not write L2 table: %v", err)
		return false, err
	}
	c.res.CorruptionsFixed += dirty
	return true, nil
}

// refcountReadFailed accounts for a refcount the COPIED check could not read. QEMU stays silent
// here because the comparison has already reported the cluster; that holds for a misaligned
// refcount block, not for an I/O error that happens only now, which must not go unnoticed.
func (c *checker) refcountReadFailed(cl hostCluster, err error) {
	if err == errRefblockUnaligned {
		return
	}
	c.res.CheckErrors++
	c.res.msg("Can't get refcount for cluster %d: %v", uint64(cl), err)
}

// markClean clears the dirty and corrupt bits after a repair left the image consistent
// (qcow2_mark_clean, qcow2_mark_consistent). Everything the repair wrote is synced first, and
// the header write is synced before returning.
func (c *checker) markClean() error {
	h, err := ReadHeader(c.s)
	if err != nil {
		return err
	}
	if h.Version < 3 || h.Incompatible&(incompatDirty|incompatCorrupt) == 0 {
		return nil
	}
	if err := c.s.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync before clearing the dirty bit: %w", err)
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], h.Incompatible&^(incompatDirty|incompatCorrupt))
	if _, err := c.s.WriteAt(b[:], offIncompatibleFeatures); err != nil {
		return fmt.Errorf("qcow2: clear the dirty bit: %w", err)
	}
	if err := c.s.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync after clearing the dirty bit: %w", err)
	}
	return nil
}
