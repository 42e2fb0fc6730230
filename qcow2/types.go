// Newtypes for every kind of number the engine handles, and the geometry that converts them.
package qcow2

import "fmt"

// The engine never passes a bare uint64 where one of these is meant: a guest offset, a host
// offset and a cluster index are distinct types, and conversions between them are methods
// that take the image's Geometry. Go only refuses to mix them if call sites do not convert
// through uint64, so conversions live here and nowhere else.

// GuestOffset is a byte offset in the virtual disk the guest sees.
type GuestOffset uint64

// guestCluster is the index of a guest cluster (GuestOffset >> cluster_bits).
type guestCluster uint64

// HostOffset is a byte offset in the image file (or the external data file).
type HostOffset uint64

// hostCluster is the index of a host cluster (HostOffset >> cluster_bits).
type hostCluster uint64

// ClusterCount is a number of clusters.
type ClusterCount uint64

// l1Index is an index into the active (or a snapshot's) L1 table.
type l1Index uint64

// l2Index is an index into one L2 table.
type l2Index uint64

// refTableIndex is an index into the refcount table.
type refTableIndex uint64

// refBlockIndex is an index into one refcount block.
type refBlockIndex uint64

// refcount is a cluster's reference count (up to 64 bits wide on disk).
type refcount uint64

// Geometry holds the derived sizes of an image. It is computed once from a validated header;
// the shift counts in it are therefore always in range.
type Geometry struct {
	// ClusterBits is log2 of the cluster size, minClusterBits..MaxClusterBits.
	ClusterBits uint32
	// RefcountOrder is log2 of the refcount width in bits, 0..MaxRefcountOrder.
	RefcountOrder uint32
	// ExtendedL2 is set when L2 entries are 128 bits wide with 32 subclusters each.
	ExtendedL2 bool
}

// ClusterSize is the cluster size in bytes.
func (g Geometry) ClusterSize() uint64 { return 1 << g.ClusterBits }

// l2EntrySize is the width of one L2 entry in bytes (8, or 16 with extended L2).
func (g Geometry) l2EntrySize() uint64 {
	if g.ExtendedL2 {
		return l2ExtendedEntrySize
	}
	return l2EntrySize
}

// l2Entries is the number of entries in one L2 table (one cluster).
func (g Geometry) l2Entries() uint64 { return g.ClusterSize() / g.l2EntrySize() }

// l2Bits is log2(l2Entries).
func (g Geometry) l2Bits() uint32 {
	if g.ExtendedL2 {
		return g.ClusterBits - 4
	}
	return g.ClusterBits - 3
}

// subclusterSize is the size of one subcluster (the cluster size without extended L2).
func (g Geometry) subclusterSize() uint64 {
	if g.ExtendedL2 {
		return g.ClusterSize() / SubclustersPerCluster
	}
	return g.ClusterSize()
}

// RefcountBits is the width of one refcount entry in bits.
func (g Geometry) RefcountBits() uint64 { return 1 << g.RefcountOrder }

// maxRefcount is the largest refcount one refcount entry can hold.
func (g Geometry) maxRefcount() refcount {
	if g.RefcountOrder == 6 {
		return ^refcount(0)
	}
	return refcount(1)<<g.RefcountBits() - 1
}

// refBlockEntries is the number of refcounts in one refcount block.
func (g Geometry) refBlockEntries() uint64 {
	return g.ClusterSize() * 8 / g.RefcountBits()
}

// refBlockBits is log2(refBlockEntries).
func (g Geometry) refBlockBits() uint32 { return g.ClusterBits + 3 - g.RefcountOrder }

// guestBytesPerL2 is how much of the guest one L2 table maps.
func (g Geometry) guestBytesPerL2() uint64 { return g.l2Entries() << g.ClusterBits }

// l1EntriesFor is the number of L1 entries needed to map a virtual disk of size bytes.
func (g Geometry) l1EntriesFor(size uint64) uint64 {
	per := g.guestBytesPerL2()
	return size/per + boolToU64(size%per != 0)
}

// clustersFor is the number of clusters needed to hold n bytes.
func (g Geometry) clustersFor(n uint64) ClusterCount {
	return ClusterCount(n>>g.ClusterBits + boolToU64(n&(g.ClusterSize()-1) != 0))
}

// Bytes is the size of n clusters in bytes.
func (g Geometry) Bytes(n ClusterCount) uint64 { return uint64(n) << g.ClusterBits }

func boolToU64(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// cluster is the guest cluster containing o.
func (o GuestOffset) cluster(g Geometry) guestCluster {
	return guestCluster(uint64(o) >> g.ClusterBits)
}

// inCluster is o's byte offset within its cluster.
func (o GuestOffset) inCluster(g Geometry) uint64 { return uint64(o) & (g.ClusterSize() - 1) }

// l1Index is the L1 index of the L2 table that maps o.
func (o GuestOffset) l1Index(g Geometry) l1Index { return o.cluster(g).l1Index(g) }

// l2Index is the index of o's entry within its L2 table.
func (o GuestOffset) l2Index(g Geometry) l2Index { return o.cluster(g).l2Index(g) }

// Offset is the guest offset of the first byte of c.
func (c guestCluster) Offset(g Geometry) GuestOffset { return GuestOffset(uint64(c) << g.ClusterBits) }

// l1Index is the L1 index of the L2 table that maps c.
func (c guestCluster) l1Index(g Geometry) l1Index { return l1Index(uint64(c) >> g.l2Bits()) }

// l2Index is the index of c's entry in its L2 table.
func (c guestCluster) l2Index(g Geometry) l2Index {
	return l2Index(uint64(c) & (g.l2Entries() - 1))
}

// remainingInL2 is the number of clusters from c to the end of its L2 table, c included.
func (c guestCluster) remainingInL2(g Geometry) ClusterCount {
	return ClusterCount(g.l2Entries() - uint64(c.l2Index(g)))
}

// firstCluster is the first guest cluster mapped by the L2 table at index i.
func (i l1Index) firstCluster(g Geometry) guestCluster {
	return guestCluster(uint64(i) << g.l2Bits())
}

// cluster is the host cluster containing o.
func (o HostOffset) cluster(g Geometry) hostCluster { return hostCluster(uint64(o) >> g.ClusterBits) }

// inCluster is o's byte offset within its host cluster.
func (o HostOffset) inCluster(g Geometry) uint64 { return uint64(o) & (g.ClusterSize() - 1) }

// checkedCluster returns the host cluster starting at o, and false if o is not cluster aligned:
// an unaligned offset read from disk is never silently rounded.
func (o HostOffset) checkedCluster(g Geometry) (hostCluster, bool) {
	if o.inCluster(g) != 0 {
		return 0, false
	}
	return o.cluster(g), true
}

// Add returns o+n.
func (o HostOffset) Add(n uint64) HostOffset { return HostOffset(uint64(o) + n) }

// Offset is the host offset of the first byte of c.
func (c hostCluster) Offset(g Geometry) HostOffset { return HostOffset(uint64(c) << g.ClusterBits) }

// Add returns the cluster n clusters after c.
func (c hostCluster) Add(n ClusterCount) hostCluster { return c + hostCluster(n) }

// refTableIndex is the reftable index of the refcount block that counts c.
func (c hostCluster) refTableIndex(g Geometry) refTableIndex {
	return refTableIndex(uint64(c) >> g.refBlockBits())
}

// refBlockIndex is the index of c's refcount within its refcount block.
func (c hostCluster) refBlockIndex(g Geometry) refBlockIndex {
	return refBlockIndex(uint64(c) & (g.refBlockEntries() - 1))
}

// firstCluster is the first host cluster counted by the refcount block at reftable index i.
func (i refTableIndex) firstCluster(g Geometry) hostCluster {
	return hostCluster(uint64(i) << g.refBlockBits())
}

func (o GuestOffset) String() string  { return fmt.Sprintf("guest:%#x", uint64(o)) }
func (o HostOffset) String() string   { return fmt.Sprintf("host:%#x", uint64(o)) }
func (c guestCluster) String() string { return fmt.Sprintf("gcluster:%d", uint64(c)) }
func (c hostCluster) String() string  { return fmt.Sprintf("hcluster:%d", uint64(c)) }
