// Preallocation for Create: where each preallocated L2 table and data cluster goes, and the
// writes that fill them in.
package qcow2

import "fmt"

// The preallocated area follows the L1 table. Without a data file each L2 table is followed by
// the data clusters it maps, as qemu-img's preallocation=metadata lays them out:
//
//	| L2 #0 | data 0 .. n-1 | L2 #1 | data n .. 2n-1 | ...      (n = entries per L2 table)
//
// With an external data file the image holds the L2 tables alone, and guest cluster k maps to
// offset k * cluster_size of the data file (QEMU's identity mapping).

// l2Cluster is the host cluster of the preallocated L2 table at L1 index i.
func (p *createPlan) l2Cluster(i l1Index) hostCluster {
	if p.dataFile {
		return p.prealloced.Add(ClusterCount(i))
	}
	return p.prealloced.Add(ClusterCount(uint64(i) * (1 + p.g.l2Entries())))
}

// dataOffset is the host offset (in the image, or in the data file) of guest cluster c.
func (p *createPlan) dataOffset(c guestCluster) HostOffset {
	if p.dataFile {
		return HostOffset(c.Offset(p.g))
	}
	return p.l2Cluster(c.l1Index(p.g)).Add(ClusterCount(1 + uint64(c.l2Index(p.g)))).Offset(p.g)
}

// writePrealloc reserves (falloc) or zeroes (full) the data clusters in the image, then writes
// the L2 tables that map them: every entry a standard cluster with COPIED set. With extended
// L2 the subcluster bitmaps stay zero, as QEMU leaves them: the clusters are allocated, their
// subclusters read as unallocated (from the backing file, or zeros).
func (p *createPlan) writePrealloc(s Storage) error {
	if p.prealloc == preallocOff {
		return nil
	}
	cs := p.g.ClusterSize()
	es := p.g.l2EntrySize()
	guest := uint64(p.g.clustersFor(p.size))
	buf := make([]byte, cs)
	for i := uint64(0); i < p.l1Entries; i++ {
		first := l1Index(i).firstCluster(p.g)
		n := min(p.g.l2Entries(), guest-uint64(first))
		if !p.dataFile && p.prealloc != preallocMetadata {
			if err := reserve(s, uint64(p.dataOffset(first)), n*cs, p.prealloc); err != nil {
				return fmt.Errorf("qcow2: preallocate data clusters: %w", err)
			}
		}
		clear(buf)
		for j := uint64(0); j < n; j++ {
			w := writeBuf(buf[j*es:])
			w.u64(uint64(makeL2Entry(p.dataOffset(first+guestCluster(j)), true, false)))
		}
		if _, err := s.WriteAt(buf, int64(p.l2Cluster(l1Index(i)).Offset(p.g))); err != nil {
			return fmt.Errorf("qcow2: write L2 table: %w", err)
		}
	}
	return nil
}

// writeDataFile sizes the external data file to the virtual size and reserves or zeroes it for
// falloc and full, as qemu-img does.
func (p *createPlan) writeDataFile(d Storage) error {
	if err := d.Truncate(0); err != nil {
		return fmt.Errorf("qcow2: truncate data file: %w", err)
	}
	if err := d.Truncate(int64(p.size)); err != nil {
		return fmt.Errorf("qcow2: size data file: %w", err)
	}
	if p.prealloc == preallocFalloc || p.prealloc == preallocFull {
		if err := reserve(d, 0, p.size, p.prealloc); err != nil {
			return fmt.Errorf("qcow2: preallocate data file: %w", err)
		}
	}
	if err := d.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync data file: %w", err)
	}
	return nil
}
