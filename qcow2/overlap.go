// Overlap checks: no metadata or data write may land on another live metadata structure.
package qcow2

// metaKind names a metadata structure, for overlap checks and messages.
type metaKind uint8

const (
	metaNone metaKind = iota
	metaHeader
	metaL1
	metaL2
	metaRefTable
	metaRefBlock
	metaSnapTable
	metaInactiveL1
	metaBitmapDir
)

var metaNames = [...]string{"data", "image header", "active L1 table", "L2 table", "refcount table", "refcount block", "snapshot table", "inactive L1 table", "bitmap directory"}

func (k metaKind) String() string { return metaNames[k] }

func rangesOverlap(a HostOffset, an uint64, b HostOffset, bn uint64) bool {
	return an > 0 && bn > 0 && uint64(a) < uint64(b)+bn && uint64(b) < uint64(a)+an
}

// overlapsFixed returns the name of the fixed-position metadata structure (header, active L1,
// reftable, snapshot table, snapshot L1 tables, bitmap directory) that [off, off+n) overlaps,
// or "". It checks what is read (guest data, L2 tables and refcount blocks being loaded), so
// a snapshot L1 table that checkSnapshotL1 refuses does not count: QEMU opens images with
// such a table and reads them (it never loads that table); writes still keep off it
// (overlapsAny).
func (img *Image) overlapsFixed(off HostOffset, n uint64) string {
	return img.overlapsExcept(off, n, metaNone, false)
}

func (img *Image) overlapsExcept(off HostOffset, n uint64, self metaKind, writing bool) string {
	g := img.geo
	cs := g.ClusterSize()
	if self != metaHeader && rangesOverlap(off, n, 0, cs) {
		return metaHeader.String()
	}
	if self != metaL1 && img.l1 != nil && !img.snapshotL1 && rangesOverlap(off, n, img.l1.off, g.Bytes(g.clustersFor(img.l1.bytes()))) {
		return metaL1.String()
	}
	if self != metaRefTable {
		rtOff, rtClusters := img.hdr.RefTableOffset, uint64(img.hdr.RefTableClusters)
		if img.alloc != nil {
			rtOff, rtClusters = img.alloc.tableOff, uint64(img.alloc.tableClusters)
		}
		if rangesOverlap(off, n, rtOff, rtClusters*cs) {
			return metaRefTable.String()
		}
	}
	if img.snapTableLen > 0 && rangesOverlap(off, n, img.hdr.SnapshotsOffset, img.snapTableLen) {
		return metaSnapTable.String()
	}
	for i, sn := range img.snapshots {
		if !writing && img.snapL1Bad[i] {
			continue
		}
		if rangesOverlap(off, n, sn.L1Offset, uint64(sn.L1Size)*l1EntrySize) {
			return metaInactiveL1.String()
		}
	}
	if b := img.hdr.Extensions.Bitmaps; b != nil && self != metaBitmapDir && rangesOverlap(off, n, b.DirectoryStart, b.DirectorySize) {
		return metaBitmapDir.String()
	}
	return ""
}

// overlapsAny adds the L2 tables and refcount blocks to overlapsFixed: every one the active L1
// table and the reftable name, cached or not, and the cached ones (new tables whose entry is
// not set yet): QEMU's default "cached" overlap-check level, whose active-L2 and
// refcount-block checks walk the whole L1 table and reftable. skipKind/skipKey name the
// structure being written, which may overlap itself.
func (img *Image) overlapsAny(off HostOffset, n uint64, skipKind metaKind, skipKey hostCluster) string {
	if what := img.overlapsExcept(off, n, skipKind, true); what != "" {
		return what
	}
	if n == 0 {
		return ""
	}
	g := img.geo
	first, last := off.cluster(g), off.Add(n-1).cluster(g)
	for c := first; c <= last; c++ {
		if img.l2 != nil && !(skipKind == metaL2 && skipKey == c) && (img.l2.contains(c) || img.activeL2(c)) {
			return metaL2.String()
		}
		if img.alloc != nil && !(skipKind == metaRefBlock && skipKey == c) && (img.alloc.cache.contains(c) || img.alloc.isRefBlock(c)) {
			return metaRefBlock.String()
		}
	}
	return ""
}

// clusterRefs is a set of host clusters with multiplicity: the clusters of the L2 tables the
// active L1 table names, or of the refcount blocks the reftable names, kept in step with the
// table (l1Table.set, allocator.setTableEntry) so that an overlap check costs one map lookup
// per cluster and allocates nothing. A structure covers one cluster from its offset (two
// when a corrupt offset is not aligned); a corrupt table naming one cluster twice keeps it
// until both entries are gone.
type clusterRefs struct {
	bits   uint32
	n      map[hostCluster]uint32
	checks uint32 // lookups, for sampling the invariant check (checkOverlapIndex)
}

func newClusterRefs(bits uint32, size int) *clusterRefs {
	return &clusterRefs{bits: bits, n: make(map[hostCluster]uint32, size)}
}

// span returns the clusters a one-cluster structure at off covers.
func (r *clusterRefs) span(off HostOffset) (hostCluster, hostCluster) {
	return hostCluster(uint64(off) >> r.bits), hostCluster((uint64(off) + 1<<r.bits - 1) >> r.bits)
}

func (r *clusterRefs) add(off HostOffset) {
	if off == 0 {
		return
	}
	first, last := r.span(off)
	for c := first; c <= last; c++ {
		r.n[c]++
	}
}

func (r *clusterRefs) remove(off HostOffset) {
	if off == 0 {
		return
	}
	first, last := r.span(off)
	for c := first; c <= last; c++ {
		if k := r.n[c]; k > 1 {
			r.n[c] = k - 1
		} else {
			delete(r.n, c)
		}
	}
}

func (r *clusterRefs) has(c hostCluster) bool { return r.n[c] > 0 }

// activeL2 reports whether an entry of the active L1 table names an L2 table covering host
// cluster c. The set is built on first use (once per L1 table: a grown one starts without).
func (img *Image) activeL2(c hostCluster) bool {
	t := img.l1
	if t == nil || img.snapshotL1 {
		return false
	}
	if t.tables == nil {
		t.tables = newClusterRefs(img.geo.ClusterBits, len(t.entries))
		for _, e := range t.entries {
			t.tables.add(e.l2Offset())
		}
	}
	hit := t.tables.has(c)
	checkOverlapIndex("active-L2", c, t.tables, hit, func(yield func(HostOffset) bool) {
		for _, e := range t.entries {
			if !yield(e.l2Offset()) {
				return
			}
		}
	})
	return hit
}

// isRefBlock reports whether a reftable entry names a refcount block covering host cluster c.
// The set is built on first use (once per reftable: a grown one starts without).
func (a *allocator) isRefBlock(c hostCluster) bool {
	if a.blocks == nil {
		a.blocks = newClusterRefs(a.g.ClusterBits, len(a.table))
		for _, e := range a.table {
			a.blocks.add(e.Offset())
		}
	}
	hit := a.blocks.has(c)
	checkOverlapIndex("refcount-block", c, a.blocks, hit, func(yield func(HostOffset) bool) {
		for _, e := range a.table {
			if !yield(e.Offset()) {
				return
			}
		}
	})
	return hit
}

// checkMetadataWrite refuses a write of kind at [off, off+n) that would overwrite another
// structure: the image is marked corrupt (something handed out a cluster twice) and the
// write fails.
func (img *Image) checkMetadataWrite(off HostOffset, n uint64, kind metaKind, self hostCluster) error {
	if what := img.overlapsAny(off, n, kind, self); what != "" {
		return img.markCorrupt(corruptf("refusing to write %s at %#x (%d bytes): it overlaps the %s", kind, uint64(off), n, what))
	}
	return nil
}

// checkDataWrite refuses a guest data write into the image file that would land on metadata.
func (img *Image) checkDataWrite(host HostOffset, n uint64) error {
	if img.data != img.file {
		return nil
	}
	if what := img.overlapsAny(host, n, metaNone, 0); what != "" {
		return img.markCorrupt(corruptf("guest data at %#x (%d bytes) would overwrite the %s", uint64(host), n, what))
	}
	return nil
}
