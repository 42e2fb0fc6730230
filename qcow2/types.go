// Newtypes for every kind of number the engine handles, and the geometry that converts them.
package qcow2

import "fmt"

// The engine never passes a bare uint64 where one of these is meant: a guest offset, a host
// offset and a cluster index are distinct types, and conversions between them are methods
// that take the image's Geometry. Go only refuses to mix them if call sites do not convert
// through uint64, so conversions live here and nowhere else.

// GuestOffset is a byte offset in the virtual disk the guest sees.
type GuestOffset uint64

// GuestCluster is the index of a guest cluster (GuestOffset >> cluster_bits).
type GuestCluster uint64

// HostOffset is a byte offset in the image file (or the external data file).
type HostOffset uint64

// HostCluster is the index of a host cluster (HostOffset >> cluster_bits).
type HostCluster uint64

// ClusterCount is a number of clusters.
type ClusterCount uint64

// L1Index is an index into the active (or a snapshot's) L1 table.
type L1Index uint64

// L2Index is an index into one L2 table.
type L2Index uint64

// RefTableIndex is an index into the refcount table.
type RefTableIndex uint64

// RefBlockIndex is an index into one refcount block.
type RefBlockIndex uint64

// Refcount is a cluster's reference count (up to 64 bits wide on disk).
type Refcount uint64

// Geometry holds the derived sizes of an image. It is computed once from a validated header;
// the shift counts in it are therefore always in range.
type Geometry struct {
	// ClusterBits is log2 of the cluster size, MinClusterBits..MaxClusterBits.
	ClusterBits uint32
	// RefcountOrder is log2 of the refcount width in bits, 0..MaxRefcountOrder.
	RefcountOrder uint32
	// ExtendedL2 is set when L2 entries are 128 bits wide with 32 subclusters each.
	ExtendedL2 bool
}

// ClusterSize is the cluster size in bytes.
func (g Geometry) ClusterSize() uint64 { return 1 << g.ClusterBits }

// L2EntrySize is the width of one L2 entry in bytes (8, or 16 with extended L2).
func (g Geometry) L2EntrySize() uint64 {
	if g.ExtendedL2 {
		return l2ExtendedEntrySize
	}
	return l2EntrySize
}

// L2Entries is the number of entries in one L2 table (one cluster).
func (g Geometry) L2Entries() uint64 { return g.ClusterSize() / g.L2EntrySize() }

// L2Bits is log2(L2Entries).
func (g Geometry) L2Bits() uint32 {
	if g.ExtendedL2 {
		return g.ClusterBits - 4
	}
	return g.ClusterBits - 3
}

// SubclusterSize is the size of one subcluster (the cluster size without extended L2).
func (g Geometry) SubclusterSize() uint64 {
	if g.ExtendedL2 {
		return g.ClusterSize() / SubclustersPerCluster
	}
	return g.ClusterSize()
}

// RefcountBits is the width of one refcount entry in bits.
func (g Geometry) RefcountBits() uint64 { return 1 << g.RefcountOrder }

// MaxRefcount is the largest refcount one refcount entry can hold.
func (g Geometry) MaxRefcount() Refcount {
	if g.RefcountOrder == 6 {
		return ^Refcount(0)
	}
	return Refcount(1)<<g.RefcountBits() - 1
}

// RefBlockEntries is the number of refcounts in one refcount block.
func (g Geometry) RefBlockEntries() uint64 {
	return g.ClusterSize() * 8 / g.RefcountBits()
}

// RefBlockBits is log2(RefBlockEntries).
func (g Geometry) RefBlockBits() uint32 { return g.ClusterBits + 3 - g.RefcountOrder }

// GuestBytesPerL2 is how much of the guest one L2 table maps.
func (g Geometry) GuestBytesPerL2() uint64 { return g.L2Entries() << g.ClusterBits }

// L1EntriesFor is the number of L1 entries needed to map a virtual disk of size bytes.
func (g Geometry) L1EntriesFor(size uint64) uint64 {
	per := g.GuestBytesPerL2()
	return size/per + boolToU64(size%per != 0)
}

// ClustersFor is the number of clusters needed to hold n bytes.
func (g Geometry) ClustersFor(n uint64) ClusterCount {
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

// Cluster is the guest cluster containing o.
func (o GuestOffset) Cluster(g Geometry) GuestCluster {
	return GuestCluster(uint64(o) >> g.ClusterBits)
}

// InCluster is o's byte offset within its cluster.
func (o GuestOffset) InCluster(g Geometry) uint64 { return uint64(o) & (g.ClusterSize() - 1) }

// L1Index is the L1 index of the L2 table that maps o.
func (o GuestOffset) L1Index(g Geometry) L1Index { return o.Cluster(g).L1Index(g) }

// L2Index is the index of o's entry within its L2 table.
func (o GuestOffset) L2Index(g Geometry) L2Index { return o.Cluster(g).L2Index(g) }

// Offset is the guest offset of the first byte of c.
func (c GuestCluster) Offset(g Geometry) GuestOffset { return GuestOffset(uint64(c) << g.ClusterBits) }

// L1Index is the L1 index of the L2 table that maps c.
func (c GuestCluster) L1Index(g Geometry) L1Index { return L1Index(uint64(c) >> g.L2Bits()) }

// L2Index is the index of c's entry in its L2 table.
func (c GuestCluster) L2Index(g Geometry) L2Index {
	return L2Index(uint64(c) & (g.L2Entries() - 1))
}

// RemainingInL2 is the number of clusters from c to the end of its L2 table, c included.
func (c GuestCluster) RemainingInL2(g Geometry) ClusterCount {
	return ClusterCount(g.L2Entries() - uint64(c.L2Index(g)))
}

// FirstCluster is the first guest cluster mapped by the L2 table at index i.
func (i L1Index) FirstCluster(g Geometry) GuestCluster {
	return GuestCluster(uint64(i) << g.L2Bits())
}

// Cluster is the host cluster containing o.
func (o HostOffset) Cluster(g Geometry) HostCluster { return HostCluster(uint64(o) >> g.ClusterBits) }

// InCluster is o's byte offset within its host cluster.
func (o HostOffset) InCluster(g Geometry) uint64 { return uint64(o) & (g.ClusterSize() - 1) }

// CheckedCluster returns the host cluster starting at o, and false if o is not cluster aligned:
// an unaligned offset read from disk is never silently rounded.
func (o HostOffset) CheckedCluster(g Geometry) (HostCluster, bool) {
	if o.InCluster(g) != 0 {
		return 0, false
	}
	return o.Cluster(g), true
}

// Add returns o+n.
func (o HostOffset) Add(n uint64) HostOffset { return HostOffset(uint64(o) + n) }

// Offset is the host offset of the first byte of c.
func (c HostCluster) Offset(g Geometry) HostOffset { return HostOffset(uint64(c) << g.ClusterBits) }

// Add returns the cluster n clusters after c.
func (c HostCluster) Add(n ClusterCount) HostCluster { return c + HostCluster(n) }

// RefTableIndex is the reftable index of the refcount block that counts c.
func (c HostCluster) RefTableIndex(g Geometry) RefTableIndex {
	return RefTableIndex(uint64(c) >> g.RefBlockBits())
}

// RefBlockIndex is the index of c's refcount within its refcount block.
func (c HostCluster) RefBlockIndex(g Geometry) RefBlockIndex {
	return RefBlockIndex(uint64(c) & (g.RefBlockEntries() - 1))
}

// FirstCluster is the first host cluster counted by the refcount block at reftable index i.
func (i RefTableIndex) FirstCluster(g Geometry) HostCluster {
	return HostCluster(uint64(i) << g.RefBlockBits())
}

func (o GuestOffset) String() string  { return fmt.Sprintf("guest:%#x", uint64(o)) }
func (o HostOffset) String() string   { return fmt.Sprintf("host:%#x", uint64(o)) }
func (c GuestCluster) String() string { return fmt.Sprintf("gcluster:%d", uint64(c)) }
func (c HostCluster) String() string  { return fmt.Sprintf("hcluster:%d", uint64(c)) }
