// Format-neutral records for check results, snapshots and qcow2 creation options.
package imgfmt

import "time"

// RepairMode says what Check may repair (qemu-img check -r).
type RepairMode int

// Repair modes.
const (
	RepairNone  RepairMode = iota // only report
	RepairLeaks                   // -r leaks: free leaked clusters
	RepairAll                     // -r all: fix leaks and refcount errors
)

// CheckResult is what a consistency check found, with qemu-img's counters.
type CheckResult struct {
	Corruptions, Leaks, CheckErrors        int
	CorruptionsFixed, LeaksFixed           int
	ImageEndOffset                         uint64
	TotalClusters, AllocatedClusters       uint64
	FragmentedClusters, CompressedClusters uint64
	// Messages are the per-cluster findings, one line each, as QEMU prints them to stderr
	// ("Leaked cluster 9 refcount=1 reference=0").
	Messages []string
	// CloseMessages are printed last, after the check's report: what closing a repaired image
	// printed ("qcow2_free_clusters failed: ..." for bitmap clusters its store could not free).
	CloseMessages []string
}

// Snapshot is one internal snapshot of a qcow2 image, with the fields qemu-img info shows.
type Snapshot struct {
	ID, Name    string
	VMStateSize uint64
	Date        time.Time
	VMClock     time.Duration
	// ICount is the instruction count at the snapshot, when the snapshot records one.
	ICount    uint64
	HasICount bool
}

// Qcow2CreateOptions are the options of a new qcow2 image, already validated (see the
// command line for QEMU's rules and messages).
type Qcow2CreateOptions struct {
	Size            uint64
	ClusterSize     uint32 // bytes; 0 means 65536
	RefcountBits    uint32 // 0 means 16
	Compat          string // "0.10" or "1.1"
	ExtendedL2      bool
	LazyRefcounts   bool
	CompressionType uint8 // 0 zlib, 1 zstd
	BackingFile     string
	BackingFormat   string
	DataFile        string
	DataFileRaw     bool
	Preallocation   Prealloc
	// UnsafeBacking records BackingFile without opening it (qemu-img create -u): the backing
	// file need not exist, and Size must be given.
	UnsafeBacking bool
}

// Layer describes one image of a backing chain.
type Layer struct {
	Filename string // as the engine opened it
	Format   Format
	Size     uint64
	// BackingFile is the layer's backing file name as stored in it ("" for none).
	BackingFile string
}
