// The image header: the raw fixed fields, the decoded Header, and its validation.
package qcow2

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"strings"
)

// rawHeader mirrors the fixed header fields byte for byte ("Header": bytes 0 - 104 of the
// first cluster). Nothing in it has been checked.
type rawHeader struct {
	magic                 uint32
	version               uint32
	backingFileOffset     uint64
	backingFileSize       uint32
	clusterBits           uint32
	size                  uint64
	cryptMethod           uint32
	l1Size                uint32
	l1TableOffset         uint64
	refcountTableOffset   uint64
	refcountTableClusters uint32
	nbSnapshots           uint32
	snapshotsOffset       uint64
	incompatibleFeatures  uint64
	compatibleFeatures    uint64
	autoclearFeatures     uint64
	refcountOrder         uint32
	headerLength          uint32
	compressionType       uint8
	// unknownFields are the header bytes after compression_type up to header_length: padding
	// today, additional fields of a later format revision tomorrow, kept on rewrite.
	unknownFields []byte
}

// decodeRawHeader decodes the fixed fields from b, which holds at least headerV2Length bytes.
// Version 3 fields are decoded only if present in b; compression_type only if header_length
// covers it, as the spec says of "Additional fields": "if header_length is smaller than the
// field's offset, the field is treated as zero".
func decodeRawHeader(b []byte) rawHeader {
	r := readBuf(b)
	var h rawHeader
	h.magic = r.u32()
	h.version = r.u32()
	h.backingFileOffset = r.u64()
	h.backingFileSize = r.u32()
	h.clusterBits = r.u32()
	h.size = r.u64()
	h.cryptMethod = r.u32()
	h.l1Size = r.u32()
	h.l1TableOffset = r.u64()
	h.refcountTableOffset = r.u64()
	h.refcountTableClusters = r.u32()
	h.nbSnapshots = r.u32()
	h.snapshotsOffset = r.u64()
	if h.version < 3 || len(b) < headerV3MinLength {
		// "For version 2, the following fields are implied": no features, refcount_order 4,
		// header_length 72.
		h.refcountOrder = 4
		h.headerLength = headerV2Length
		return h
	}
	h.incompatibleFeatures = r.u64()
	h.compatibleFeatures = r.u64()
	h.autoclearFeatures = r.u64()
	h.refcountOrder = r.u32()
	h.headerLength = r.u32()
	if h.headerLength > offCompressionType && len(r) > 0 {
		h.compressionType = r.u8()
	}
	return h
}

// encode writes the fixed fields into b, which holds at least h.headerLength bytes (72 for
// version 2). Bytes between the last field and header_length are zeroed (padding).
func (h *rawHeader) encode(b []byte) {
	clear(b[:h.headerLength])
	w := writeBuf(b)
	w.u32(h.magic)
	w.u32(h.version)
	w.u64(h.backingFileOffset)
	w.u32(h.backingFileSize)
	w.u32(h.clusterBits)
	w.u64(h.size)
	w.u32(h.cryptMethod)
	w.u32(h.l1Size)
	w.u64(h.l1TableOffset)
	w.u64(h.refcountTableOffset)
	w.u32(h.refcountTableClusters)
	w.u32(h.nbSnapshots)
	w.u64(h.snapshotsOffset)
	if h.version < 3 {
		return
	}
	w.u64(h.incompatibleFeatures)
	w.u64(h.compatibleFeatures)
	w.u64(h.autoclearFeatures)
	w.u32(h.refcountOrder)
	w.u32(h.headerLength)
	if h.headerLength > offCompressionType {
		w.u8(h.compressionType)
		// "An unknown additional field may be safely ignored other than preserving its value
		// when rewriting the image header."
		w.bytes(h.unknownFields)
	}
}

// Header is a decoded, validated image header together with its header extensions and the
// backing file name. A Header returned by ReadHeader satisfies every limit in Validate.
type Header struct {
	Version      uint32
	ClusterBits  uint32
	Size         uint64 // virtual disk size in bytes
	CryptMethod  uint32
	HeaderLength uint32

	L1Size           uint32
	L1TableOffset    HostOffset
	RefTableOffset   HostOffset
	RefTableClusters uint32
	SnapshotCount    uint32
	SnapshotsOffset  HostOffset
	Incompatible     uint64
	Compatible       uint64
	Autoclear        uint64
	RefcountOrder    uint32
	CompressionType  uint8
	// UnknownFields holds the header bytes after compression_type up to HeaderLength (zero
	// padding, or additional fields of a later revision of the format), preserved on rewrite
	// as the spec requires.
	UnknownFields     []byte
	BackingFileOffset uint64 // where the name was stored; 0 when there is none
	BackingFile       string
	// Extensions holds every header extension in file order, the known ones decoded.
	Extensions Extensions
}

// Geometry returns the sizes derived from the header.
func (h *Header) Geometry() Geometry {
	return Geometry{
		ClusterBits:   h.ClusterBits,
		RefcountOrder: h.RefcountOrder,
		ExtendedL2:    h.Incompatible&IncompatExtendedL2 != 0,
	}
}

// ClusterSize is the cluster size in bytes.
func (h *Header) ClusterSize() uint64 { return 1 << h.ClusterBits }

// Dirty reports the dirty bit (refcounts may be stale).
func (h *Header) Dirty() bool { return h.Incompatible&incompatDirty != 0 }

// Corrupt reports the corrupt bit.
func (h *Header) Corrupt() bool { return h.Incompatible&incompatCorrupt != 0 }

// LazyRefcounts reports the lazy refcounts compatible bit.
func (h *Header) LazyRefcounts() bool { return h.Compatible&compatLazyRefcounts != 0 }

// HasDataFile reports whether guest data lives in an external data file.
func (h *Header) HasDataFile() bool { return h.Incompatible&incompatDataFile != 0 }

// DataFileRaw reports the raw external data autoclear bit.
func (h *Header) DataFileRaw() bool { return h.Autoclear&autoclearDataFileRaw != 0 }

// CompatLevel is "0.10" for version 2 and "1.1" for version 3, as qemu-img names them.
func (h *Header) CompatLevel() string {
	if h.Version == 2 {
		return "0.10"
	}
	return "1.1"
}

// raw converts the header's fixed fields back to their on-disk form.
func (h *Header) raw() rawHeader {
	return rawHeader{
		magic:                 Magic,
		version:               h.Version,
		backingFileOffset:     h.BackingFileOffset,
		backingFileSize:       uint32(len(h.BackingFile)),
		clusterBits:           h.ClusterBits,
		size:                  h.Size,
		cryptMethod:           h.CryptMethod,
		l1Size:                h.L1Size,
		l1TableOffset:         uint64(h.L1TableOffset),
		refcountTableOffset:   uint64(h.RefTableOffset),
		refcountTableClusters: h.RefTableClusters,
		nbSnapshots:           h.SnapshotCount,
		snapshotsOffset:       uint64(h.SnapshotsOffset),
		incompatibleFeatures:  h.Incompatible,
		compatibleFeatures:    h.Compatible,
		autoclearFeatures:     h.Autoclear,
		refcountOrder:         h.RefcountOrder,
		headerLength:          h.HeaderLength,
		compressionType:       h.CompressionType,
		unknownFields:         h.UnknownFields,
	}
}

// encodeFixed returns the fixed header fields as they are stored at byte 0 of the image
// (HeaderLength bytes). The engine rewrites only these bytes when a pointer or a feature bit
// changes: one small write inside the first sector.
func (h *Header) encodeFixed() []byte {
	r := h.raw()
	b := make([]byte, r.headerLength)
	r.encode(b)
	return b
}

// EncodeCluster0 returns the whole first cluster: the fixed fields, the header extensions, the
// end-of-extensions marker and the backing file name. The name is placed right after the
// extensions and h.BackingFileOffset is updated to match. It fails if everything does not fit
// in one cluster, as the spec requires ("must not be larger than the first cluster").
func (h *Header) EncodeCluster0() ([]byte, error) {
	cs := h.ClusterSize()
	b := make([]byte, cs)
	exts := h.Extensions.encode()
	end := uint64(h.HeaderLength) + uint64(len(exts)) + extHeaderSize
	if h.Version == 2 && len(exts) == 0 {
		// A version 2 image without extensions needs no end marker; QEMU still writes one.
		end = uint64(h.HeaderLength) + extHeaderSize
	}
	if len(h.BackingFile) > maxBackingFileSize {
		return nil, formatErr(-1, "backing_file_size", len(h.BackingFile), "must be at most %d", maxBackingFileSize)
	}
	if end+uint64(len(h.BackingFile)) > cs {
		return nil, fmt.Errorf("%w: header, extensions and backing file name need %d bytes, more than the %d-byte first cluster",
			ErrFormat, end+uint64(len(h.BackingFile)), cs)
	}
	if h.BackingFile != "" {
		h.BackingFileOffset = end
		copy(b[end:], h.BackingFile)
	} else {
		h.BackingFileOffset = 0
	}
	r := h.raw()
	r.encode(b)
	copy(b[h.HeaderLength:], exts)
	// The end marker (type 0, length 0) is already zero.
	return b, nil
}

// ReadHeader reads and validates the header of the image in s, including its header
// extensions and backing file name. Nothing outside the first cluster is read.
func ReadHeader(s Storage) (*Header, error) {
	fileSize, err := s.Size()
	if err != nil {
		return nil, fmt.Errorf("qcow2: size of image file: %w", err)
	}
	fixed := make([]byte, headerV3Length)
	n, err := s.ReadAt(fixed, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("qcow2: read header: %w", err)
	}
	if n < headerV2Length {
		return nil, fmt.Errorf("%w: file is %d bytes, too short for a qcow2 header", ErrFormat, fileSize)
	}
	raw := decodeRawHeader(fixed[:n])
	if err := raw.validateFixed(); err != nil {
		return nil, err
	}
	// cluster_bits has been checked, so the shift is safe and the buffer at most 2 MiB.
	cs := uint64(1) << raw.clusterBits
	cluster0 := make([]byte, min(cs, uint64(max(fileSize, 0))))
	if _, err := s.ReadAt(cluster0, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("qcow2: read first cluster: %w", err)
	}
	return decodeHeader(raw, cluster0, uint64(fileSize))
}

// DecodeHeader decodes and validates a header from the image's first cluster (or as much of
// it as the file holds); fileSize is the length of the image file, against which table
// offsets are checked.
func DecodeHeader(cluster0 []byte, fileSize uint64) (*Header, error) {
	if len(cluster0) < headerV2Length {
		return nil, fmt.Errorf("%w: %d bytes, too short for a qcow2 header", ErrFormat, len(cluster0))
	}
	raw := decodeRawHeader(cluster0[:min(len(cluster0), headerV3Length)])
	if err := raw.validateFixed(); err != nil {
		return nil, err
	}
	cs := 1 << raw.clusterBits
	return decodeHeader(raw, cluster0[:min(len(cluster0), cs)], fileSize)
}

// validateFixed checks the fields that everything else depends on: magic, version,
// cluster_bits and header_length. After it, 1<<clusterBits is a safe shift.
func (r *rawHeader) validateFixed() error {
	if r.magic != Magic {
		return fmt.Errorf("%w: not a qcow2 image (magic %#08x, want %#08x)", ErrFormat, r.magic, Magic)
	}
	if r.version != 2 && r.version != 3 {
		return &FormatError{Off: offVersion, Field: "version", Val: r.version, Msg: "only versions 2 and 3 exist", Class: ErrUnsupported}
	}
	if r.clusterBits < minClusterBits || r.clusterBits > maxClusterBits {
		return formatErr(offClusterBits, "cluster_bits", r.clusterBits, "must be between %d and %d (512 B to 2 MiB clusters)", minClusterBits, maxClusterBits)
	}
	if r.version == 3 {
		if r.headerLength < headerV3MinLength {
			return formatErr(offHeaderLength, "header_length", r.headerLength, "must be at least %d for version 3", headerV3MinLength)
		}
		if r.headerLength%8 != 0 {
			return formatErr(offHeaderLength, "header_length", r.headerLength, "must be a multiple of 8")
		}
		if uint64(r.headerLength) > 1<<r.clusterBits {
			return formatErr(offHeaderLength, "header_length", r.headerLength, "exceeds the cluster size %d", uint64(1)<<r.clusterBits)
		}
	}
	return nil
}

func decodeHeader(r rawHeader, cluster0 []byte, fileSize uint64) (*Header, error) {
	h := &Header{
		Version:           r.version,
		ClusterBits:       r.clusterBits,
		Size:              r.size,
		CryptMethod:       r.cryptMethod,
		HeaderLength:      r.headerLength,
		L1Size:            r.l1Size,
		L1TableOffset:     HostOffset(r.l1TableOffset),
		RefTableOffset:    HostOffset(r.refcountTableOffset),
		RefTableClusters:  r.refcountTableClusters,
		SnapshotCount:     r.nbSnapshots,
		SnapshotsOffset:   HostOffset(r.snapshotsOffset),
		Incompatible:      r.incompatibleFeatures,
		Compatible:        r.compatibleFeatures,
		Autoclear:         r.autoclearFeatures,
		RefcountOrder:     r.refcountOrder,
		CompressionType:   r.compressionType,
		BackingFileOffset: r.backingFileOffset,
	}
	cs := uint64(1) << r.clusterBits
	if r.version >= 3 && r.headerLength > offCompressionType+1 {
		// Bytes past the end of a short file read as zeros, as QEMU reads them.
		h.UnknownFields = make([]byte, r.headerLength-(offCompressionType+1))
		if uint64(len(cluster0)) > offCompressionType+1 {
			copy(h.UnknownFields, cluster0[offCompressionType+1:])
		}
	}

	// The backing file name "must not be larger than 1023 bytes" and, as QEMU and imago enforce,
	// lies inside the first cluster, so a corrupt header cannot point it anywhere else.
	extEnd := cs
	if r.backingFileOffset != 0 {
		if r.backingFileOffset > cs {
			return nil, formatErr(offBackingFileOffset, "backing_file_offset", r.backingFileOffset, "must lie inside the first cluster (%d bytes)", cs)
		}
		if r.backingFileOffset < uint64(r.headerLength) {
			return nil, formatErr(offBackingFileOffset, "backing_file_offset", r.backingFileOffset, "overlaps the %d-byte header", r.headerLength)
		}
		if r.backingFileSize > maxBackingFileSize {
			return nil, formatErr(offBackingFileSize, "backing_file_size", r.backingFileSize, "must be at most %d", maxBackingFileSize)
		}
		if r.backingFileOffset+uint64(r.backingFileSize) > cs {
			return nil, formatErr(offBackingFileSize, "backing_file_size", r.backingFileSize, "name at %d runs past the first cluster", r.backingFileOffset)
		}
		end := r.backingFileOffset + uint64(r.backingFileSize)
		if end > uint64(len(cluster0)) {
			return nil, formatErr(offBackingFileSize, "backing_file_size", r.backingFileSize, "name runs past the end of the file (%d bytes)", fileSize)
		}
		name, err := decodeName("backing file name", cluster0[r.backingFileOffset:end])
		if err != nil {
			return nil, formatErr(offBackingFileOffset, "backing_file_offset", r.backingFileOffset, "%v", err)
		}
		h.BackingFile = name
		extEnd = r.backingFileOffset
	} else if r.backingFileSize != 0 && r.version == 2 {
		// QEMU ignores the size when the offset is 0; so do we.
		h.BackingFileOffset = 0
	}

	// Header extensions sit between the header and the backing file name (or the end of the
	// first cluster). Version 2 images may carry them too: QEMU writes the backing format one.
	if uint64(r.headerLength) < extEnd {
		extEnd = min(extEnd, uint64(len(cluster0)))
		exts, err := decodeExtensions(cluster0[:extEnd], uint64(r.headerLength))
		if err != nil {
			return nil, err
		}
		h.Extensions = exts
	}
	if err := h.Validate(fileSize); err != nil {
		return nil, err
	}
	return h, nil
}

// decodeName returns the string stored in b as QEMU reads it: QEMU copies names from the image
// into NUL-terminated C strings, so a name ends at its first NUL byte (some writers count a
// terminating NUL in the length). A name that is empty that way while its stored length is not
// is refused, as QEMU refuses to open such an image.
func decodeName(what string, b []byte) (string, error) {
	if len(b) > maxStringLength {
		return "", fmt.Errorf("%s is %d bytes, more than %d", what, len(b), maxStringLength)
	}
	name := cString(b)
	if name == "" && len(b) > 0 {
		return "", fmt.Errorf("%s starts with a NUL byte", what)
	}
	return name, nil
}

// checkName checks a string that will be written into an image: valid length, no NUL bytes.
func checkName(what string, b []byte) error {
	if len(b) > maxStringLength {
		return fmt.Errorf("%s is %d bytes, more than %d", what, len(b), maxStringLength)
	}
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		return fmt.Errorf("%s contains a NUL byte at %d", what, i)
	}
	return nil
}

// Validate checks every field against the spec's and QEMU's limits (docs/qcow2-spec-notes.md),
// given the image file's length. The first violation is returned as a *FormatError that
// names the field, its value and the limit.
func (h *Header) Validate(fileSize uint64) error {
	cs := h.ClusterSize()
	g := h.Geometry()

	// Features.
	if unknown := h.Incompatible &^ incompatKnown; unknown != 0 {
		return &FormatError{Off: offIncompatibleFeatures, Field: "incompatible_features", Val: fmt.Sprintf("%#x", h.Incompatible),
			Msg: "unsupported feature(s): " + h.Extensions.describeBits(featureIncompatible, unknown), Class: ErrUnsupported}
	}
	if h.Version == 2 && (h.Incompatible != 0 || h.Compatible != 0 || h.Autoclear != 0) {
		return formatErr(offIncompatibleFeatures, "incompatible_features", h.Incompatible, "version 2 images have no feature bits")
	}
	if g.ExtendedL2 && h.ClusterBits < minExtendedL2ClusterBits {
		return formatErr(offClusterBits, "cluster_bits", h.ClusterBits, "extended L2 entries need clusters of at least %d bytes", 1<<minExtendedL2ClusterBits)
	}
	switch h.CompressionType {
	case CompressionZlib:
		if h.Incompatible&incompatCompression != 0 {
			return formatErr(offCompressionType, "compression_type", h.CompressionType, "the compression type bit is set, so the type must not be zlib (0)")
		}
	case CompressionZstd:
		if h.Incompatible&incompatCompression == 0 {
			return formatErr(offCompressionType, "compression_type", h.CompressionType, "a non-zlib compression type needs incompatible bit 3")
		}
	default:
		return &FormatError{Off: offCompressionType, Field: "compression_type", Val: h.CompressionType, Msg: "unknown compression type (0 zlib and 1 zstd exist)", Class: ErrUnsupported}
	}

	// Refcounts.
	if h.RefcountOrder > maxRefcountOrder {
		return formatErr(offRefcountOrder, "refcount_order", h.RefcountOrder, "must be at most %d (64-bit refcounts)", maxRefcountOrder)
	}
	if h.Version == 2 && h.RefcountOrder != 4 {
		return formatErr(offRefcountOrder, "refcount_order", h.RefcountOrder, "version 2 images use 16-bit refcounts (order 4)")
	}

	// Encryption: not served, but named clearly.
	switch h.CryptMethod {
	case cryptNone:
		if h.Extensions.Crypto != nil {
			return formatErr(-1, "full disk encryption header extension", "present", "found in an unencrypted image")
		}
	case cryptAES, cryptLUKS:
		name := map[uint32]string{cryptAES: "AES", cryptLUKS: "LUKS"}[h.CryptMethod]
		return &FormatError{Off: offCryptMethod, Field: "crypt_method", Val: h.CryptMethod, Msg: name + " encrypted images are not supported", Class: ErrUnsupported}
	default:
		return formatErr(offCryptMethod, "crypt_method", h.CryptMethod, "unknown encryption method (0 none, 1 AES, 2 LUKS)")
	}

	// External data file.
	if h.DataFileRaw() && !h.HasDataFile() {
		return formatErr(offAutoclearFeatures, "autoclear_features", fmt.Sprintf("%#x", h.Autoclear), "the raw external data bit needs an external data file (incompatible bit 2)")
	}
	// "Note: backing files are incompatible with raw external data files (auto-clear feature
	// bit 1)." An external data file without the raw bit may have a backing file (qemu-img
	// creates such images).
	if h.DataFileRaw() && h.BackingFile != "" {
		return formatErr(offBackingFileOffset, "backing_file_offset", h.BackingFileOffset, "an image with a raw external data file cannot have a backing file")
	}
	if h.Extensions.DataFile != "" && !h.HasDataFile() {
		return formatErr(-1, "external data file name extension", h.Extensions.DataFile, "present without incompatible bit 2")
	}

	// The refcount table.
	if h.RefTableClusters == 0 {
		return formatErr(offRefcountTableClusters, "refcount_table_clusters", h.RefTableClusters, "the image has no reference count table")
	}
	if uint64(h.RefTableClusters)*cs > maxRefTableBytes {
		return formatErr(offRefcountTableClusters, "refcount_table_clusters", h.RefTableClusters, "a %d-byte reftable exceeds the %d-byte limit", uint64(h.RefTableClusters)*cs, maxRefTableBytes)
	}
	if err := checkTable("refcount_table_offset", offRefcountTableOffset, h.RefTableOffset, uint64(h.RefTableClusters)*cs, g, fileSize); err != nil {
		return err
	}

	// The active L1 table.
	if uint64(h.L1Size)*l1EntrySize > MaxL1Bytes {
		return formatErr(offL1Size, "l1_size", h.L1Size, "a %d-byte L1 table exceeds the %d-byte limit", uint64(h.L1Size)*l1EntrySize, MaxL1Bytes)
	}
	need := g.l1EntriesFor(h.Size)
	if need > math.MaxInt32 {
		return formatErr(offSize, "size", h.Size, "needs %d L1 entries, more than %d", need, math.MaxInt32)
	}
	if uint64(h.L1Size) < need {
		return formatErr(offL1Size, "l1_size", h.L1Size, "too small for a virtual size of %d bytes (needs %d entries)", h.Size, need)
	}
	if h.L1Size > 0 {
		if err := checkTable("l1_table_offset", offL1TableOffset, h.L1TableOffset, uint64(h.L1Size)*l1EntrySize, g, fileSize); err != nil {
			return err
		}
	} else if h.L1TableOffset.inCluster(g) != 0 {
		return formatErr(offL1TableOffset, "l1_table_offset", uint64(h.L1TableOffset), "not aligned to a %d-byte cluster", cs)
	}

	// The snapshot table: its entries are variable-sized, so only the count and the start are
	// checked here, as QEMU checks them at open (qcow2_validate_table "Snapshot table"): the
	// table may start anywhere cluster aligned, even past the end of the file, where it reads
	// as zeros. LoadSnapshots and ReadSnapshots bound the rest.
	if h.SnapshotCount > maxSnapshots {
		return formatErr(offNbSnapshots, "nb_snapshots", h.SnapshotCount, "must be at most %d", maxSnapshots)
	}
	if h.SnapshotsOffset.inCluster(g) != 0 {
		return formatErr(offSnapshotsOffset, "snapshots_offset", uint64(h.SnapshotsOffset), "not aligned to a %d-byte cluster", cs)
	}
	if uint64(h.SnapshotsOffset) > math.MaxInt64-uint64(h.SnapshotCount)*snapshotFixedSize {
		return formatErr(offSnapshotsOffset, "snapshots_offset", uint64(h.SnapshotsOffset), "a %d-entry snapshot table there overflows the largest file offset", h.SnapshotCount)
	}

	// QEMU reads the bitmaps extension only when the autoclear bit says it is consistent;
	// otherwise it ignores it ("all bitmaps are now considered inconsistent"), and so do we.
	if b := h.Extensions.Bitmaps; b != nil && h.Autoclear&AutoclearBitmaps != 0 {
		if err := b.validate(g); err != nil {
			return err
		}
	}
	return nil
}

// checkTable checks that a table of n bytes at off is cluster aligned, does not overlap the
// header cluster, does not overflow, and lies inside the file.
func checkTable(field string, fieldOff int64, off HostOffset, n uint64, g Geometry, fileSize uint64) error {
	if off.inCluster(g) != 0 {
		return formatErr(fieldOff, field, uint64(off), "not aligned to a %d-byte cluster", g.ClusterSize())
	}
	if off == 0 {
		return formatErr(fieldOff, field, uint64(off), "points at the image header")
	}
	end, carry := bits.Add64(uint64(off), n, 0)
	if carry != 0 || end > math.MaxInt64 || end > maxHostOffset {
		return formatErr(fieldOff, field, uint64(off), "a %d-byte table there overflows the largest image offset", n)
	}
	if end > fileSize {
		return formatErr(fieldOff, field, uint64(off), "a %d-byte table there ends at %d, past the end of the %d-byte file", n, end, fileSize)
	}
	return nil
}
