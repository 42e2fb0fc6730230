// The counting half of Check: walk every piece of reachable metadata, count the references to
// each host cluster, and flag malformed entries (QEMU's calculate_refcounts).
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
	// References one cluster or more past the end of the file are not counted, but a
	// rebuild must keep its new structures (which go past the end) off them. Near ones (that
	// start within pastEOFWindow clusters of the end) are summed up by the highest cluster
	// they reach, far ones by the lowest cluster they start at: constant memory however many
	// broken entries there are.
	pastEOFNear    hostCluster // highest cluster of a near reference, 0 if none
	pastEOFFarFrom hostCluster // lowest first cluster of a far reference, 0 if none

	snaps         []Snapshot
	snapTableSize uint64
	// snapCorruptions are the snapshot table's own corruptions (incomplete entries), added to
	// res once the refcount check and its repairs are done.
	snapCorruptions int
	l2buf           []byte
}

// newChecker reads the header (unless the caller has it), the reftable and the snapshot table.
func newChecker(s Storage, h *Header, mode RepairMode) (*checker, error) {
	size, err := s.Size()
	if err != nil {
		return nil, fmt.Errorf("qcow2: size of image file: %w", err)
	}
	if h == nil {
		if h, err = checkReadHeader(s, uint64(size)); err != nil {
			return nil, err
		}
	}
	g := h.Geometry()
	c := &checker{
		s: s, h: h, g: g, cs: g.ClusterSize(), fileSize: uint64(size), mode: mode,
		res: &CheckResult{},
	}
	c.nb = uint64(g.clustersFor(c.fileSize))
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

// checkReadHeader reads the header as qemu-img check's open does: QEMU opens in check mode
// without looking at the snapshot table (nb_snapshots, snapshots_offset), which
// readSnapshotTable then judges. A header that ReadHeader refuses for those two fields alone is
// decoded with them cleared, and they are put back afterwards.
func checkReadHeader(s Storage, fileSize uint64) (*Header, error) {
	h, err := ReadHeader(s)
	var fe *FormatError
	if err == nil || !errors.As(err, &fe) || (fe.Field != "nb_snapshots" && fe.Field != "snapshots_offset") {
		return h, err
	}
	// The header was read once, so its cluster size is valid: at most 2 MiB.
	buf := make([]byte, min(fileSize, uint64(1)<<maxClusterBits))
	if _, rerr := s.ReadAt(buf, 0); rerr != nil && !errors.Is(rerr, io.EOF) {
		return nil, fmt.Errorf("qcow2: read first cluster: %w", rerr)
	}
	count := binary.BigEndian.Uint32(buf[offNbSnapshots:])
	start := binary.BigEndian.Uint64(buf[offSnapshotsOffset:])
	clear(buf[offNbSnapshots : offSnapshotsOffset+8])
	h, err2 := DecodeHeader(buf, fileSize)
	if err2 != nil {
		return nil, err // the first reason
	}
	h.SnapshotCount, h.SnapshotsOffset = count, HostOffset(start)
	return h, nil
}

// corrupt counts one corruption and records its message.
func (c *checker) corrupt(format string, args ...any) { c.corruptW(1, format, args...) }

// corruptW counts w corruptions found at once (one finding in metadata referenced w times, as
// QEMU would count it once per reference) and records the message once.
func (c *checker) corruptW(w uint64, format string, args ...any) {
	c.res.Corruptions += int(min(w, math.MaxInt32))
	c.res.msg(format, args...)
}

// inc counts one reference to every cluster that [off, off+size) touches
// (qcow2_inc_refcounts_imrt).
func (c *checker) inc(off HostOffset, size uint64) { c.incW(off, size, 1) }

// incW counts w references to every cluster that [off, off+size) touches, as w separate
// increments would (an overflow past the refcount width is one corruption per increment that
// does not fit). A range ending one cluster or more past the end of the file is a corruption
// and is not counted: the last cluster may be partly written, nothing else may lie outside the
// file.
func (c *checker) incW(off HostOffset, size, w uint64) {
	if size == 0 || w == 0 {
		return
	}
	end := uint64(off) + size
	if uint64(off) >= maxHostOffset<<6 || size >= maxHostOffset<<6 || end >= c.fileSize+c.cs {
		c.corruptW(w, "ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset %#x size %#x", uint64(off), size)
		if uint64(off) < maxHostOffset<<6 && size < maxHostOffset<<6 {
			c.notePastEOF(off.cluster(c.g), HostOffset(end-1).cluster(c.g))
		}
		return
	}
	for k := off.cluster(c.g); k <= HostOffset(end-1).cluster(c.g); k++ {
		c.incCluster(k, w)
	}
}

// incCluster adds w references to cluster k, saturating at the refcount width.
func (c *checker) incCluster(k hostCluster, w uint64) {
	max := c.g.maxRefcount()
	v := c.refs.get(k)
	if room := uint64(max - v); w > room {
		c.corruptW(w-room, "ERROR: overflow cluster offset=%#x", uint64(k.Offset(c.g)))
		c.res.msg("Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing")
		w = room
	}
	if w > 0 {
		c.refs.set(k, v+refcount(w))
	}
}

// pastEOFWindow is how far past the end of the file (in clusters) a broken reference counts as
// near: a rebuild then starts its new structures after it.
const pastEOFWindow = 1 << 24

func (c *checker) notePastEOF(first, last hostCluster) {
	if uint64(first) < c.nb+pastEOFWindow {
		c.pastEOFNear = max(c.pastEOFNear, last)
	} else if c.pastEOFFarFrom == 0 || first < c.pastEOFFarFrom {
		c.pastEOFFarFrom = first
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

func (c *checker) clusterType(e l2Entry) chkClusterType {
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
		if c.h.HasDataFile() && e.copied() {
			return chkNormal
		}
		return chkUnallocated
	}
	return chkNormal
}

// l2EntriesInFile is how many entries of the L2 table at l2 lie inside the file: the rest read
// as zeros (unallocated), so walks stop there. This bounds the work per table by the file size,
// not by the (up to 2 MiB) cluster size.
func (c *checker) l2EntriesInFile(l2 HostOffset) uint64 {
	if uint64(l2) >= c.fileSize {
		return 0
	}
	return min(c.g.l2Entries(), (c.fileSize-uint64(l2)+c.g.l2EntrySize()-1)/c.g.l2EntrySize())
}

// l2Entry returns entry i of the L2 table in buf and, with extended L2, its subcluster bitmap.
func (c *checker) l2Entry(buf []byte, i uint64) (l2Entry, subclusterBitmap) {
	es := c.g.l2EntrySize()
	e := l2Entry(binary.BigEndian.Uint64(buf[i*es:]))
	if !c.g.ExtendedL2 {
		return e, 0
	}
	return e, subclusterBitmap(binary.BigEndian.Uint64(buf[i*es+8:]))
}

// calculate counts every reference in the image and checks the refcount blocks.
func (c *checker) calculate(fix RepairMode) error {
	c.inc(0, c.cs) // the header cluster
	tables := []l1Ref{{off: c.h.L1TableOffset, n: uint64(c.h.L1Size), active: true}}
	if c.h.HasDataFile() && len(c.snaps) > 0 {
		c.corrupt("ERROR %d snapshots in image with data file", len(c.snaps))
	}
	for _, sn := range c.snaps {
		if sn.L1Offset.inCluster(c.g) != 0 {
			c.corrupt("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; snapshot table entry corrupted", sn.ID, sn.Name, uint64(sn.L1Offset))
			continue
		}
		if uint64(sn.L1Size)*l1EntrySize > MaxL1Bytes {
			c.corrupt("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table entry corrupted", sn.ID, sn.Name, sn.L1Size)
			continue
		}
		tables = append(tables, l1Ref{off: sn.L1Offset, n: uint64(sn.L1Size)})
	}
	if err := c.walkTables(tables, fix); err != nil {
		return err
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

// checkRefblocks checks every reftable entry and counts the refcount blocks
// (check_refblocks). A refcount block must be referenced exactly once; anything else, and
// any malformed entry, calls for a rebuild of the refcount structures.
func (c *checker) checkRefblocks(fix RepairMode) {
	for i, e := range c.disk.table {
		off := e.Offset()
		if e.reserved() != 0 {
			c.corrupt("ERROR refcount table entry %d has reserved bits set", i)
			c.rebuild = true
			continue
		}
		if off.inCluster(c.g) != 0 {
			c.corrupt("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted", i)
			c.rebuild = true
			continue
		}
		if uint64(off.cluster(c.g)) >= c.nb {
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
		if n := c.refs.get(off.cluster(c.g)); n != 1 {
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
				if o := e.l2Offset(); o != 0 && hit(o, c.cs) {
					return "active L2 table"
				}
			}
		}
	}
	return ""
}

// readActiveL1 reads the active L1 table, which the header's validation placed inside the file
// and under the 32 MiB limit.
func (c *checker) readActiveL1() ([]l1Entry, error) {
	buf := make([]byte, uint64(c.h.L1Size)*l1EntrySize)
	if err := readAtZero(c.s, buf, uint64(c.h.L1TableOffset), c.fileSize); err != nil {
		return nil, err
	}
	l1 := make([]l1Entry, c.h.L1Size)
	for i := range l1 {
		l1[i] = l1Entry(binary.BigEndian.Uint64(buf[i*l1EntrySize:]))
	}
	return l1, nil
}
