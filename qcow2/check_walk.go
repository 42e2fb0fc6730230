// The counting half of Check: walk every piece of reachable metadata, count the references to
// each host cluster, and flag malformed entries (QEMU's calculate_refcounts).
package qcow2

import (
	"encoding/binary"
	"fmt"
	"math"
)

// checker is the state of one check pass over an image.
type checker struct {
	s        Storage
	h        *Header
	g        Geometry
	cs       uint64
	fileSize uint64
	nb       uint64 // clusters below the end of the file (the last one may be partial)
	mode     RepairMode
	res      *CheckResult

	refs    *imrt
	disk    *diskRefs
	rebuild bool // the refcount structures cannot be repaired in place
	// pastEOF lists the cluster ranges referenced one cluster or more past the end of the
	// file. They are not counted; a rebuild keeps its new structures off them.
	pastEOF [][2]HostCluster

	snaps         []chkSnapshot
	snapTableSize uint64
	l2buf         []byte
}

// newChecker reads the header (unless the caller has it), the reftable and the snapshot table.
func newChecker(s Storage, h *Header, mode RepairMode) (*checker, error) {
	size, err := s.Size()
	if err != nil {
		return nil, fmt.Errorf("qcow2: size of image file: %w", err)
	}
	if h == nil {
		if h, err = ReadHeader(s); err != nil {
			return nil, err
		}
	}
	g := h.Geometry()
	c := &checker{
		s: s, h: h, g: g, cs: g.ClusterSize(), fileSize: uint64(size), mode: mode,
		res: &CheckResult{},
	}
	c.nb = uint64(g.ClustersFor(c.fileSize))
	if c.nb > math.MaxInt32 {
		// QEMU's limit (EFBIG), which also bounds the in-memory counts.
		c.res.CheckErrors++
		return nil, fmt.Errorf("%w: image file of %d bytes has more than %d clusters, too many to check", ErrNoSpace, c.fileSize, math.MaxInt32)
	}
	c.refs = newIMRT(c.nb + 1)
	if c.disk, err = loadDiskRefs(s, h, c.fileSize); err != nil {
		return nil, err
	}
	c.l2buf = make([]byte, c.cs)
	return c, nil
}

// corrupt counts one corruption and records its message.
func (c *checker) corrupt(format string, args ...any) {
	c.res.Corruptions++
	c.res.msg(format, args...)
}

// inc counts one reference to every cluster that [off, off+size) touches
// (qcow2_inc_refcounts_imrt). A range ending one cluster or more past the end of the file is a
// corruption and is not counted: the last cluster may be partly written, nothing else may lie
// outside the file.
func (c *checker) inc(off HostOffset, size uint64) {
	if size == 0 {
		return
	}
	end := uint64(off) + size
	if uint64(off) >= MaxHostOffset<<6 || size >= MaxHostOffset<<6 || end >= c.fileSize+c.cs {
		c.corrupt("ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset %#x size %#x", uint64(off), size)
		if uint64(off) < MaxHostOffset<<6 && size < MaxHostOffset<<6 {
			c.pastEOF = append(c.pastEOF, [2]HostCluster{off.Cluster(c.g), HostOffset(end - 1).Cluster(c.g)})
		}
		return
	}
	max := c.g.MaxRefcount()
	for k := off.Cluster(c.g); k <= HostOffset(end-1).Cluster(c.g); k++ {
		v := c.refs.get(k)
		if v == max {
			c.corrupt("ERROR: overflow cluster offset=%#x (refcount_bits=%d is too narrow for its references)", uint64(k.Offset(c.g)), c.g.RefcountBits())
			continue
		}
		c.refs.set(k, v+1)
	}
}

// clusterType classifies a standard L2 entry as qcow2_get_cluster_type does.
type chkClusterType uint8

const (
	chkUnallocated chkClusterType = iota
	chkZeroPlain
	chkZeroAlloc
	chkNormal
	chkCompressed
)

func (c *checker) clusterType(e L2Entry) chkClusterType {
	switch {
	case e.Compressed():
		return chkCompressed
	case uint64(e)&l2Zero != 0 && !c.g.ExtendedL2:
		if e.Offset() != 0 {
			return chkZeroAlloc
		}
		return chkZeroPlain
	case e.Offset() == 0:
		// Offset 0 is a valid data offset in an external data file, where every cluster has
		// refcount 1 and therefore COPIED set.
		if c.h.HasDataFile() && e.Copied() {
			return chkNormal
		}
		return chkUnallocated
	}
	return chkNormal
}

// l2Entry returns entry i of the L2 table in buf and, with extended L2, its subcluster bitmap.
func (c *checker) l2Entry(buf []byte, i uint64) (L2Entry, SubclusterBitmap) {
	es := c.g.L2EntrySize()
	e := L2Entry(binary.BigEndian.Uint64(buf[i*es:]))
	if !c.g.ExtendedL2 {
		return e, 0
	}
	return e, SubclusterBitmap(binary.BigEndian.Uint64(buf[i*es+8:]))
}

// calculate counts every reference in the image and checks the refcount blocks.
func (c *checker) calculate(fix RepairMode) error {
	c.inc(0, c.cs) // the header cluster
	if err := c.walkL1(c.h.L1TableOffset, c.h.L1Size, true, fix); err != nil {
		return err
	}
	if c.h.HasDataFile() && len(c.snaps) > 0 {
		c.corrupt("ERROR %d snapshots in image with data file", len(c.snaps))
	}
	for _, sn := range c.snaps {
		if sn.L1Offset.InCluster(c.g) != 0 {
			c.corrupt("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; snapshot table entry corrupted", sn.ID, sn.Name, uint64(sn.L1Offset))
			continue
		}
		if uint64(sn.L1Size)*l1EntrySize > MaxL1Bytes {
			c.corrupt("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table entry corrupted", sn.ID, sn.Name, sn.L1Size)
			continue
		}
		if err := c.walkL1(sn.L1Offset, sn.L1Size, false, fix); err != nil {
			return err
		}
	}
	c.inc(c.h.SnapshotsOffset, c.snapTableSize)
	c.inc(c.h.RefTableOffset, uint64(c.h.RefTableClusters)*c.cs)
	if cr := c.h.Extensions.Crypto; cr != nil {
		c.inc(cr.Offset, cr.Length)
	}
	if err := c.walkBitmaps(); err != nil {
		return err
	}
	c.checkRefblocks(fix)
	return nil
}

// walkL1 counts an L1 table, its L2 tables and their clusters. Only the active table (active)
// feeds the allocation statistics. Entries lying past the end of the file read as zero, so the
// buffer is bounded by the file size as well as by the 32 MiB L1 limit.
func (c *checker) walkL1(off HostOffset, n uint32, active bool, fix RepairMode) error {
	if n == 0 {
		return nil
	}
	size := uint64(n) * l1EntrySize
	c.inc(off, size)
	if uint64(off) >= c.fileSize {
		return nil
	}
	buf := make([]byte, min(size, c.fileSize-uint64(off)))
	if err := readAtZero(c.s, buf, uint64(off), c.fileSize); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: I/O error in check_refcounts_l1: %v", err)
		return err
	}
	for i := 0; i+l1EntrySize <= len(buf); i += l1EntrySize {
		e := L1Entry(binary.BigEndian.Uint64(buf[i:]))
		if e == 0 {
			continue
		}
		if e.Reserved() != 0 {
			c.corrupt("ERROR found L1 entry with reserved bits set: %x", uint64(e))
		}
		l2 := e.L2Offset()
		c.inc(l2, c.cs)
		if l2.InCluster(c.g) != 0 {
			c.corrupt("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted", uint64(l2))
		}
		if err := c.walkL2(l2, active, fix); err != nil {
			return err
		}
	}
	return nil
}

// walkL2 counts the clusters one L2 table references and checks its entries.
func (c *checker) walkL2(l2 HostOffset, active bool, fix RepairMode) error {
	buf := c.l2buf
	if err := readAtZero(c.s, buf, uint64(l2), c.fileSize); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: I/O error in check_refcounts_l2: %v", err)
		return err
	}
	dataFile := c.h.HasDataFile()
	var nextContiguous HostOffset
	for i := uint64(0); i < c.g.L2Entries(); i++ {
		e, bm := c.l2Entry(buf, i)
		typ := c.clusterType(e)
		if typ != chkCompressed && e.Reserved() != 0 {
			c.corrupt("ERROR found l2 entry with reserved bits set: %x", uint64(e))
		}
		switch typ {
		case chkCompressed:
			coff, clen := e.CompressedRange(c.g)
			if e.Copied() {
				c.corrupt("ERROR: coffset=%#x: copied flag must never be set for compressed clusters", uint64(coff))
			}
			if dataFile {
				c.corrupt("ERROR compressed cluster %d with data file, entry=%#x", i, uint64(e))
				continue
			}
			if bm != 0 {
				c.corrupt("ERROR compressed cluster %d with non-zero subcluster allocation bitmap, entry=%#x", i, uint64(e))
				continue
			}
			c.inc(coff, clen)
			if active {
				// Compressed clusters are fragmented by nature (QEMU counts them so).
				c.res.AllocatedClusters++
				c.res.CompressedClusters++
				c.res.FragmentedClusters++
			}
		case chkNormal, chkZeroAlloc:
			off := e.Offset()
			if bm.Allocated()&bm.ZeroBits() != 0 {
				c.corrupt("ERROR offset=%x: Allocated cluster has corrupted subcluster allocation bitmap", uint64(off))
			}
			if off.InCluster(c.g) != 0 {
				c.res.Corruptions++
				hasData := uint64(e)&l2Zero == 0
				if c.g.ExtendedL2 {
					hasData = bm.Allocated() != 0
				}
				if hasData {
					c.res.msg("ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted.", uint64(off))
				} else {
					c.res.msg("%s offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted.", repairWord(fix == RepairAll), uint64(off))
					if fix == RepairAll && c.zeroEntry(l2, buf, i) {
						continue // the entry no longer references the cluster
					}
				}
			}
			if active {
				c.res.AllocatedClusters++
				if nextContiguous != 0 && off != nextContiguous {
					c.res.FragmentedClusters++
				}
				nextContiguous = off.Add(c.cs)
			}
			if !dataFile {
				c.inc(off, c.cs)
			}
		case chkUnallocated:
			if bm.Allocated() != 0 {
				c.corrupt("ERROR: Unallocated cluster has non-zero subcluster allocation map")
			}
		}
	}
	return nil
}

func repairWord(repair bool) string {
	if repair {
		return "Repairing"
	}
	return "ERROR"
}

// zeroEntry turns entry i of the L2 table at l2 (whose bytes are in buf) into a plain zero
// cluster, which is how QEMU repairs a misaligned preallocated zero cluster, and writes the
// entry. It reports whether the repair was made; the corruption already counted then moves to
// the fixed column.
func (c *checker) zeroEntry(l2 HostOffset, buf []byte, i uint64) bool {
	es := c.g.L2EntrySize()
	ent := buf[i*es : (i+1)*es]
	if c.g.ExtendedL2 {
		_, bm := c.l2Entry(buf, i)
		// Every subcluster that was allocated or zero becomes zero.
		zero := uint64(bm.Allocated()|bm.ZeroBits()) << 32
		binary.BigEndian.PutUint64(ent, 0)
		binary.BigEndian.PutUint64(ent[8:], zero)
	} else {
		binary.BigEndian.PutUint64(ent, l2Zero)
	}
	at := l2.Add(i * es)
	if what := c.overlapsMetadata(at, es, true); what != "" {
		c.res.CheckErrors++
		c.res.msg("ERROR: Overlap check failed: L2 entry at %#x lies in the %s", uint64(at), what)
		return false
	}
	if _, err := c.s.WriteAt(ent, int64(at)); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: Failed to overwrite L2 table entry: %v", err)
		return false
	}
	if err := c.s.Sync(); err != nil {
		c.res.CheckErrors++
		c.res.msg("ERROR: Failed to overwrite L2 table entry: %v", err)
		return false
	}
	c.res.Corruptions--
	c.res.CorruptionsFixed++
	return true
}

// checkRefblocks checks every reftable entry and counts the refcount blocks
// (check_refblocks). A refcount block must be referenced exactly once; anything else, and
// any malformed entry, calls for a rebuild of the refcount structures.
func (c *checker) checkRefblocks(fix RepairMode) {
	for i, e := range c.disk.table {
		off := e.Offset()
		if e.Reserved() != 0 {
			c.corrupt("ERROR refcount table entry %d has reserved bits set", i)
			c.rebuild = true
			continue
		}
		if off.InCluster(c.g) != 0 {
			c.corrupt("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted", i)
			c.rebuild = true
			continue
		}
		if uint64(off.Cluster(c.g)) >= c.nb {
			// QEMU grows the file to cover the block when repairing; a rebuild (which a
			// block of zeros needs anyway) does the same job without writing past the end.
			c.corrupt("ERROR refcount block %d is outside image", i)
			if fix == RepairAll {
				c.rebuild = true
			}
			continue
		}
		if off == 0 {
			continue
		}
		c.inc(off, c.cs)
		if n := c.refs.get(off.Cluster(c.g)); n != 1 {
			c.corrupt("ERROR refcount block %d refcount=%d", i, n)
			c.rebuild = true
		}
	}
}

// overlapsMetadata names the metadata structure that [off, off+n) overlaps, or "" if none:
// the header, the active L1 table, the reftable, a refcount block, the snapshot table, a
// snapshot's L1 table, the bitmap directory, or (unless ignoreActiveL2) an active L2 table.
// Repairs check their writes against it, as QEMU's overlap check does.
func (c *checker) overlapsMetadata(off HostOffset, n uint64, ignoreActiveL2 bool) string {
	// Round to whole clusters, as QEMU does.
	start := uint64(off) &^ (c.cs - 1)
	end := (uint64(off) + n + c.cs - 1) &^ (c.cs - 1)
	hit := func(o HostOffset, size uint64) bool {
		return size > 0 && uint64(o) < end && start < uint64(o)+size
	}
	switch {
	case start < c.cs:
		return "image header"
	case hit(c.h.L1TableOffset, uint64(c.h.L1Size)*l1EntrySize):
		return "active L1 table"
	case hit(c.h.RefTableOffset, uint64(c.h.RefTableClusters)*c.cs):
		return "refcount table"
	case hit(c.h.SnapshotsOffset, c.snapTableSize):
		return "snapshot table"
	}
	for _, e := range c.disk.table {
		if o := e.Offset(); o != 0 && hit(o, c.cs) {
			return "refcount block"
		}
	}
	for _, sn := range c.snaps {
		if hit(sn.L1Offset, uint64(sn.L1Size)*l1EntrySize) {
			return "inactive L1 table"
		}
	}
	if b := c.h.Extensions.Bitmaps; b != nil && c.h.Autoclear&AutoclearBitmaps != 0 && hit(b.DirectoryStart, b.DirectorySize) {
		return "bitmap directory"
	}
	if !ignoreActiveL2 {
		l1, err := c.readActiveL1()
		if err == nil {
			for _, e := range l1 {
				if o := e.L2Offset(); o != 0 && hit(o, c.cs) {
					return "active L2 table"
				}
			}
		}
	}
	return ""
}

// readActiveL1 reads the active L1 table, which the header's validation placed inside the file
// and under the 32 MiB limit.
func (c *checker) readActiveL1() ([]L1Entry, error) {
	buf := make([]byte, uint64(c.h.L1Size)*l1EntrySize)
	if err := readAtZero(c.s, buf, uint64(c.h.L1TableOffset), c.fileSize); err != nil {
		return nil, err
	}
	l1 := make([]L1Entry, c.h.L1Size)
	for i := range l1 {
		l1[i] = L1Entry(binary.BigEndian.Uint64(buf[i*l1EntrySize:]))
	}
	return l1, nil
}
