// Header extensions: decoding, validation and re-encoding (unknown ones are preserved).
package qcow2

import (
	"fmt"
	"math/bits"
	"strings"
	"syscall"
)

// Extensions holds the header extensions of an image. Known extensions are decoded into their
// fields; unknown ones are kept byte for byte so that rewriting the header loses nothing
// ("unknown header extensions ... must be preserved" is what QEMU does with
// unknown_header_ext, and what qnbd does too).
type Extensions struct {
	// BackingFormat is the backing file format name ("raw", "qcow2"), or "" when absent.
	BackingFormat string
	// DataFile is the external data file name, or "" when absent.
	DataFile string
	// FeatureNames is the feature name table, in file order.
	FeatureNames []FeatureName
	// Bitmaps is the bitmaps extension, or nil. A read-write open loads the bitmaps and
	// marks them in-use (bitmap_open.go); a clean close stores them (bitmap_store.go).
	Bitmaps *BitmapsExtension
	// Crypto is the full disk encryption header pointer, or nil.
	Crypto *CryptoExtension
	// Unknown holds every extension of an unknown type.
	Unknown []RawExtension
}

// FeatureName is one entry of the feature name table.
type FeatureName struct {
	Type uint8 // featureIncompatible, featureCompatible or featureAutoclear
	Bit  uint8
	Name string
}

// BitmapsExtension is the bitmaps header extension.
type BitmapsExtension struct {
	Count          uint32
	DirectorySize  uint64
	DirectoryStart HostOffset
	// Reserved is the reserved word, which must be zero (checked, like the other fields,
	// only when the autoclear bit marks the extension consistent, as QEMU does).
	Reserved uint32
}

// CryptoExtension is the full disk encryption header pointer.
type CryptoExtension struct {
	Offset HostOffset
	Length uint64
}

// RawExtension is an extension qnbd does not interpret.
type RawExtension struct {
	Type uint32
	Data []byte
}

// decodeExtensions decodes the extensions in area[start:]. The area ends at the backing file
// name or at the end of the first cluster, whichever comes first; an extension running past
// that end is refused, as is a second copy of a known extension.
func decodeExtensions(area []byte, start uint64) (Extensions, error) {
	var e Extensions
	seen := map[uint32]bool{}
	off := start
	end := uint64(len(area))
	for off+extHeaderSize <= end {
		r := readBuf(area[off:])
		typ, n := r.u32(), uint64(r.u32())
		if typ == extEnd {
			return e, nil
		}
		dataOff := off + extHeaderSize
		if n > end-dataOff {
			return e, formatErr(int64(off), "header extension length", n, "extension %#08x runs past the end of the extension area at byte %d", typ, end)
		}
		data := area[dataOff : dataOff+n]
		if typ != extFeatureNames && seen[typ] && isKnownExtension(typ) {
			return e, formatErr(int64(off), "header extension type", fmt.Sprintf("%#08x", typ), "appears more than once")
		}
		seen[typ] = true
		if err := e.decodeOne(typ, data, int64(off)); err != nil {
			return e, err
		}
		off = dataOff + pad8(n)
	}
	// No end marker before the area ended: QEMU accepts this, and so do we.
	return e, nil
}

// maxBackingFormatLen is the size of QEMU's backing format buffer (BlockDriverState's
// backing_format[16]), terminating NUL included.
const maxBackingFormatLen = 16

func isKnownExtension(typ uint32) bool {
	switch typ {
	case extBackingFormat, extFeatureNames, extBitmaps, extFullDiskCrypto, extDataFile:
		return true
	}
	return false
}

func (e *Extensions) decodeOne(typ uint32, data []byte, off int64) error {
	switch typ {
	case extBackingFormat:
		// QEMU reads the format name into a 16-byte buffer and refuses longer ones
		// ("ext_backing_format: len=%u too large").
		if len(data) >= maxBackingFormatLen {
			return formatErr(off, "backing format extension", len(data), "a format name of %d bytes is too long (QEMU's limit is %d)", len(data), maxBackingFormatLen-1)
		}
		name, err := decodeName("backing file format", data)
		if err != nil {
			return formatErr(off, "backing format extension", len(data), "%v", err)
		}
		e.BackingFormat = name
	case extDataFile:
		name, err := decodeName("external data file name", data)
		if err != nil {
			return formatErr(off, "external data file extension", len(data), "%v", err)
		}
		e.DataFile = name
	case extFeatureNames:
		// Trailing bytes shorter than one entry are ignored, as QEMU does.
		for r := readBuf(data); len(r) >= featureNameEntrySize; {
			t, b := r.u8(), r.u8()
			name := r.bytes(featureNameEntrySize - 2)
			if i := strings.IndexByte(string(name), 0); i >= 0 {
				name = name[:i]
			}
			e.FeatureNames = append(e.FeatureNames, FeatureName{Type: t, Bit: b, Name: string(name)})
		}
	case extBitmaps:
		if len(data) != bitmapsExtSize {
			return bitmapsExtErr("bitmaps_ext: Invalid extension length",
				formatErr(off, "bitmaps extension length", len(data), "must be %d", bitmapsExtSize))
		}
		r := readBuf(data)
		b := &BitmapsExtension{Count: r.u32(), Reserved: r.u32()}
		b.DirectorySize = r.u64()
		b.DirectoryStart = HostOffset(r.u64())
		e.Bitmaps = b
	case extFullDiskCrypto:
		if len(data) != cryptoExtSize {
			return formatErr(off, "encryption extension length", len(data), "must be %d", cryptoExtSize)
		}
		r := readBuf(data)
		e.Crypto = &CryptoExtension{Offset: HostOffset(r.u64()), Length: r.u64()}
	default:
		e.Unknown = append(e.Unknown, RawExtension{Type: typ, Data: append([]byte(nil), data...)})
	}
	return nil
}

// validate is what QEMU's qcow2_read_extensions checks of a bitmaps extension the autoclear
// bit vouches for, in its order and words (docs/bitmaps.md, "Damaged bitmaps"). The directory
// itself (its size against its entries, where it lies) is judged when it is read
// (validateBitmapsAtOpen), as QEMU judges it when it loads the bitmaps.
func (b *BitmapsExtension) validate(g Geometry) error {
	switch {
	case b.Reserved != 0:
		return bitmapsExtErr("bitmaps_ext: Reserved field is not zero",
			formatErr(-1, "bitmaps extension reserved field", b.Reserved, "must be zero"))
	case b.Count > MaxBitmaps:
		return bitmapsExtErr(fmt.Sprintf("bitmaps_ext: Image has %d bitmaps, exceeding the QEMU supported maximum of %d", b.Count, MaxBitmaps),
			formatErr(-1, "nb_bitmaps", b.Count, "must be at most %d", MaxBitmaps))
	case b.Count == 0:
		return bitmapsExtErr("found bitmaps extension with zero bitmaps",
			formatErr(-1, "nb_bitmaps", b.Count, "the bitmaps extension lists no bitmaps"))
	case b.DirectoryStart.inCluster(g) != 0:
		return bitmapsExtErr("bitmaps_ext: invalid bitmap directory offset",
			formatErr(-1, "bitmap_directory_offset", uint64(b.DirectoryStart), "not aligned to a %d-byte cluster", g.ClusterSize()))
	case b.DirectorySize > MaxBitmapDirectoryBytes:
		return bitmapsExtErr(fmt.Sprintf("bitmaps_ext: bitmap directory size (%d) exceeds the maximum supported size (%d)", b.DirectorySize, MaxBitmapDirectoryBytes),
			formatErr(-1, "bitmap_directory_size", b.DirectorySize, "must be at most %d", MaxBitmapDirectoryBytes))
	}
	return nil
}

// bitmapsExtErr is a bitmaps extension QEMU refuses: its message is QEMU's, and it unwraps to
// the FormatError naming the field.
func bitmapsExtErr(msg string, field error) error {
	return &BitmapOpenError{Msg: msg, Errno: syscall.EINVAL, field: field}
}

// encode returns the extensions as they are stored after the fixed header, without the end
// marker.
func (e *Extensions) encode() []byte {
	var out []byte
	add := func(typ uint32, data []byte) {
		rec := make([]byte, extHeaderSize+pad8(uint64(len(data))))
		w := writeBuf(rec)
		w.u32(typ)
		w.u32(uint32(len(data)))
		w.bytes(data)
		out = append(out, rec...)
	}
	if e.BackingFormat != "" {
		add(extBackingFormat, []byte(e.BackingFormat))
	}
	if e.DataFile != "" {
		add(extDataFile, []byte(e.DataFile))
	}
	if e.Crypto != nil {
		b := make([]byte, cryptoExtSize)
		w := writeBuf(b)
		w.u64(uint64(e.Crypto.Offset))
		w.u64(e.Crypto.Length)
		add(extFullDiskCrypto, b)
	}
	if len(e.FeatureNames) > 0 {
		b := make([]byte, len(e.FeatureNames)*featureNameEntrySize)
		w := writeBuf(b)
		for _, f := range e.FeatureNames {
			name := make([]byte, featureNameEntrySize-2)
			copy(name, f.Name)
			w.u8(f.Type)
			w.u8(f.Bit)
			w.bytes(name)
		}
		add(extFeatureNames, b)
	}
	if e.Bitmaps != nil {
		b := make([]byte, bitmapsExtSize)
		w := writeBuf(b)
		w.u32(e.Bitmaps.Count)
		w.u32(e.Bitmaps.Reserved)
		w.u64(e.Bitmaps.DirectorySize)
		w.u64(uint64(e.Bitmaps.DirectoryStart))
		add(extBitmaps, b)
	}
	for _, u := range e.Unknown {
		add(u.Type, u.Data)
	}
	return out
}

// describeBits names the set bits of mask of the given feature type, using the image's own
// feature name table where it has an entry ("bit 7 (fancy feature)").
func (e *Extensions) describeBits(typ uint8, mask uint64) string {
	var parts []string
	for mask != 0 {
		bit := uint8(bits.TrailingZeros64(mask))
		mask &^= 1 << bit
		desc := fmt.Sprintf("bit %d", bit)
		for _, f := range e.FeatureNames {
			if f.Type == typ && f.Bit == bit && f.Name != "" {
				desc += " (" + f.Name + ")"
				break
			}
		}
		parts = append(parts, desc)
	}
	return strings.Join(parts, ", ")
}

// defaultFeatureNames is the feature name table qnbd writes into images it creates, naming
// every feature bit it knows, as QEMU does.
func defaultFeatureNames() []FeatureName {
	return []FeatureName{
		{featureIncompatible, 0, "dirty bit"},
		{featureIncompatible, 1, "corrupt bit"},
		{featureIncompatible, 2, "external data file"},
		{featureIncompatible, 3, "compression type"},
		{featureIncompatible, 4, "extended L2 entries"},
		{featureCompatible, 0, "lazy refcounts"},
		{featureAutoclear, 0, "bitmaps"},
		{featureAutoclear, 1, "raw external data"},
	}
}
