// On-disk constants of the qcow2 format, each quoting docs/interop/qcow2.txt (qemu/qemu).
package qcow2

// Magic is the first four bytes of every qcow2 image:
// "QCOW magic string ("QFI\xfb")".
const Magic uint32 = 0x514649fb

// Header layout. "All numbers in qcow2 are stored in Big Endian byte order."
const (
	// headerV2Length is the fixed size of a version 2 header ("header_length ... For version 2,
	// the value is always 72").
	headerV2Length = 72
	// headerV3MinLength is the smallest header_length a version 3 image may declare
	// ("For version 3 or higher, the header must be at least 104 bytes long").
	headerV3MinLength = 104
	// headerV3Length is the header length qnbd writes: 104 bytes plus the compression_type byte
	// ("Additional fields"), padded to a multiple of 8, as QEMU does.
	headerV3Length = 112

	// Byte offsets of the header fields.
	offMagic                 = 0
	offVersion               = 4
	offBackingFileOffset     = 8
	offBackingFileSize       = 16
	offClusterBits           = 20
	offSize                  = 24
	offCryptMethod           = 32
	offL1Size                = 36
	offL1TableOffset         = 40
	offRefcountTableOffset   = 48
	offRefcountTableClusters = 56
	offNbSnapshots           = 60
	offSnapshotsOffset       = 64
	offIncompatibleFeatures  = 72
	offCompatibleFeatures    = 80
	offAutoclearFeatures     = 88
	offRefcountOrder         = 96
	offHeaderLength          = 100
	offCompressionType       = 104
)

// Limits. The spec's own bounds, and QEMU's implementation limits (block/qcow2.h) where the spec
// leaves the bound to the implementation; an image outside them is refused with a *FormatError.
const (
	// minClusterBits: "cluster_bits ... Must not be less than 9 (i.e. 512 byte clusters)."
	minClusterBits = 9
	// maxClusterBits: "QEMU as of today has an implementation limit of 2 MB as the maximum
	// cluster size".
	maxClusterBits = 21
	// minExtendedL2ClusterBits: with extended L2 entries "the cluster size must be at least
	// 16 KB" (subclusters are at least 512 bytes: 32 per cluster).
	minExtendedL2ClusterBits = 14
	// maxBackingFileSize: "backing_file_size ... Must not be longer than 1023 bytes."
	maxBackingFileSize = 1023
	// maxRefcountOrder: "refcount_order ... refcount_bits = 1 << refcount_order ... may not exceed
	// 64 bits" (refcount_order <= 6).
	maxRefcountOrder = 6
	// MaxL1Bytes is QEMU's QCOW_MAX_L1_SIZE: the active L1 table may not exceed 32 MiB.
	MaxL1Bytes = 32 << 20
	// maxRefTableBytes is QEMU's QCOW_MAX_REFTABLE_SIZE: the reftable may not exceed 8 MiB.
	maxRefTableBytes = 8 << 20
	// maxSnapshots is QEMU's QCOW_MAX_SNAPSHOTS.
	maxSnapshots = 65536
	// maxSnapshotTableBytes is QEMU's QCOW_MAX_SNAPSHOTS_SIZE: the whole table at most 64 MiB.
	maxSnapshotTableBytes = 64 << 20
	// maxSnapshotExtraData is QEMU's limit on a snapshot entry's extra_data_size.
	maxSnapshotExtraData = 1024
	// minSnapshotExtraDataV3: "Version 3 images must include extra data at least up to byte 55"
	// of the entry, that is 16 bytes of extra data (vm_state_size_large, disk_size).
	minSnapshotExtraDataV3 = 16
	// MaxBitmaps is QEMU's QCOW2_MAX_BITMAPS.
	MaxBitmaps = 65535
	// MaxBitmapDirectoryBytes is QEMU's QCOW2_MAX_BITMAP_DIRECTORY_SIZE.
	MaxBitmapDirectoryBytes = 1024 * MaxBitmaps
	// maxStringLength bounds the length of names inside header extensions (backing format,
	// external data file name). QEMU reads them into 1024-byte buffers.
	maxStringLength = 1023
	// maxHostOffset is QEMU's QCOW_MAX_CLUSTER_OFFSET: "bits 9-55 of the offset"; any host offset
	// at or above 2^56 cannot be represented in an L1/L2 entry.
	maxHostOffset = 1 << 56
)

// Feature bits. "Bitmask of incompatible features. An implementation must fail to open an
// image if an unknown bit is set."
const (
	// incompatDirty: "Dirty bit. If this bit is set then refcounts may be inconsistent, make
	// sure to scan L1/L2 tables to repair refcounts before accessing the image."
	incompatDirty uint64 = 1 << 0
	// incompatCorrupt: "Corrupt bit. If this bit is set then any data structure may be
	// corrupt and the image must not be written to (unless for regaining consistency)."
	incompatCorrupt uint64 = 1 << 1
	// incompatDataFile: "External data file bit. If this bit is set, an external data file is
	// used. Guest clusters are then stored in the external data file."
	incompatDataFile uint64 = 1 << 2
	// incompatCompression: "Compression type bit. If this bit is set, a non-default
	// compression is used for compressed clusters. The compression_type field must be present
	// and not zero."
	incompatCompression uint64 = 1 << 3
	// IncompatExtendedL2: "Extended L2 Entries. If this bit is set then L2 table entries use
	// an extended format that allows subcluster-based allocation."
	IncompatExtendedL2 uint64 = 1 << 4
	// incompatKnown is every incompatible bit this implementation understands.
	incompatKnown = incompatDirty | incompatCorrupt | incompatDataFile | incompatCompression | IncompatExtendedL2

	// compatLazyRefcounts: "Lazy refcounts bit. If this bit is set then lazy refcount updates
	// can be used. This means marking the image file dirty and postponing refcount metadata
	// updates."
	compatLazyRefcounts uint64 = 1 << 0

	// AutoclearBitmaps: "Bitmaps extension bit. This bit indicates consistency for the bitmaps
	// extension data." qnbd does not update bitmaps, so it clears this bit before its first
	// write, as the spec requires of an implementation that does not.
	AutoclearBitmaps uint64 = 1 << 0
	// autoclearDataFileRaw: "Raw external data bit. If this bit is set, the external data file
	// can be read as a consistent standalone raw image without looking at the qcow2 metadata."
	autoclearDataFileRaw uint64 = 1 << 1
	// autoclearKnown is every autoclear bit qnbd keeps when it writes (the bitmaps bit with
	// the bitmaps kept as QEMU keeps them: bitmap_open.go).
	autoclearKnown = autoclearDataFileRaw | AutoclearBitmaps
)

// Encryption methods (crypt_method). "0 for no encryption, 1 for AES encryption, 2 for LUKS
// encryption". qnbd serves only unencrypted images.
const (
	cryptNone uint32 = 0
	cryptAES  uint32 = 1
	cryptLUKS uint32 = 2
)

// Compression types (compression_type, header byte 104). "0: zlib <https://www.zlib.net/>,
// 1: zstd <http://github.com/facebook/zstd>".
const (
	CompressionZlib uint8 = 0
	CompressionZstd uint8 = 1
)

// Header extension magics. "Directly after the image header, optional sections called header
// extensions can be stored. Each extension has a structure like the following: Byte 0 - 3:
// Header extension type ... 4 - 7: Length of the header extension data ... 8 - n: Header
// extension data; n - m: Padding to round up the header extension size to the next multiple
// of 8."
const (
	extEnd            uint32 = 0x00000000 // "End of the header extension area"
	extBackingFormat  uint32 = 0xe2792aca // "Backing file format name string"
	extFeatureNames   uint32 = 0x6803f857 // "Feature name table"
	extBitmaps        uint32 = 0x23852875 // "Bitmaps extension"
	extFullDiskCrypto uint32 = 0x0537be77 // "Full disk encryption header pointer"
	extDataFile       uint32 = 0x44415441 // "External data file name string"

	// extHeaderSize is the type and length words in front of every extension.
	extHeaderSize = 8
	// featureNameEntrySize: each feature name table entry is "Byte 0: Type of feature ...
	// 1: Bit number within the selected feature bitmap ... 2 - 47: Feature name".
	featureNameEntrySize = 48
	// bitmapsExtSize: nb_bitmaps u32, reserved u32, bitmap_directory_size u64,
	// bitmap_directory_offset u64.
	bitmapsExtSize = 24
	// cryptoExtSize: offset u64, length u64.
	cryptoExtSize = 16
)

// Feature name table types ("Type of feature (select feature bitmap)").
const (
	featureIncompatible uint8 = 0
	featureCompatible   uint8 = 1
	featureAutoclear    uint8 = 2
)

// L1 entries. "Bit 0 - 8: Reserved (set to 0); 9 - 55: Bits 9-55 of the offset into the image
// file at which the L2 table starts. Must be aligned to a cluster boundary. If the offset is 0,
// the L2 table and all clusters described by this L2 table are unallocated. 56 - 62: Reserved
// (set to 0); 63: 0 for an L2 table that is unused or requires COW, 1 if its refcount is
// exactly one."
const (
	l1OffsetMask   uint64 = 0x00fffffffffffe00
	l1ReservedMask uint64 = 0x7f000000000001ff
	// entryCopied is bit 63 in L1 and L2 entries: "1 if its refcount is exactly one".
	entryCopied uint64 = 1 << 63
	// l1EntrySize is the size of one L1 entry in bytes.
	l1EntrySize = 8
)

// L2 entries. "Bit 0 - 61: Cluster descriptor; 62: 0 for standard clusters, 1 for compressed
// clusters; 63: 0 for clusters that are unused, compressed or require COW. 1 for standard
// clusters whose refcount is exactly one."
const (
	l2Compressed uint64 = 1 << 62
	// l2Zero is bit 0 of a standard cluster descriptor: "If set to 1, the cluster reads as
	// all zeros. The host cluster offset can be used to describe a preallocation, but it won't
	// be used for reading the data for this cluster, nor is data read from the backing file if
	// the cluster is unallocated. With version 2 or with extended L2 entries (see the next
	// section), this is always 0."
	l2Zero uint64 = 1 << 0
	// l2OffsetMask is "Bits 9 - 55 of host cluster offset" of a standard descriptor.
	l2OffsetMask uint64 = 0x00fffffffffffe00
	// l2StdReservedMask: "Bits 1 - 8: Reserved (set to 0)" and "56 - 61: Reserved (set to 0)".
	l2StdReservedMask uint64 = 0x3f000000000001fe
	// l2EntrySize is a standard L2 entry; extended entries are twice as wide.
	l2EntrySize         = 8
	l2ExtendedEntrySize = 16
	// compressedSectorSize: the compressed descriptor counts "additional 512-byte sectors".
	compressedSectorSize = 512
	// SubclustersPerCluster: "every cluster is divided into 32 subclusters of the same size".
	SubclustersPerCluster = 32
)

// Refcount table entries. "Bit 0 - 8: Reserved (set to 0); 9 - 63: Bits 9-63 of the offset
// into the image file at which the refcount block starts. Must be aligned to a cluster
// boundary. If this is 0, the corresponding refcount block has not yet been allocated. All
// refcounts managed by this refcount block are 0."
const (
	reftableOffsetMask   uint64 = 0xfffffffffffffe00
	reftableReservedMask uint64 = 0x00000000000001ff
	reftableEntrySize           = 8
)

// Snapshot table. "Snapshot table entry: 0 - 7: Offset into the image file at which the L1
// table for the snapshot starts ... 8 - 11: Number of entries in the L1 table ... 12 - 13:
// Length of the unique ID string ... 14 - 15: Length of the name ... 16 - 19: Time ... (sec)
// 20 - 23: (nsec) 24 - 31: VM clock 32 - 35: vm_state_size 36 - 39: extra_data_size".
const (
	snapshotFixedSize = 40
)

// Bitmap directory entries ("Bitmap directory entry: 0 - 7 bitmap_table_offset, 8 - 11
// bitmap_table_size, 12 - 15 flags, 16 type, 17 granularity_bits, 18 - 19 name_size, 20 - 23
// extra_data_size").
const (
	bitmapDirEntryFixedSize = 24
)

// Bitmap table entries ("Bitmap table entry: 0: Reserved and must be zero if bits 9 - 55 are
// non-zero. If bits 9 - 55 are zero: 0 if the cluster is unallocated and should read as all
// zeros, 1 if it should read as all ones ... 1 - 8: Reserved and must be zero. 9 - 55: Bits
// 9 - 55 of the host cluster offset ... 56 - 63: Reserved and must be zero.") and QEMU's bound
// on a bitmap table (BME_MAX_TABLE_SIZE entries).
const (
	bitmapEntryOffsetMask   uint64 = 0x00fffffffffffe00
	bitmapEntryReservedMask uint64 = 0xff000000000001fe
	bitmapEntryAllOnes      uint64 = 1
	maxBitmapTableEntries          = 0x8000000
)
