// The bitmap directory: its entries parsed and checked as QEMU's bitmap_list_load and
// check_dir_entry do, and encoded again for a store (docs/bitmaps.md).
package qcow2

import (
	"encoding/binary"
	"fmt"
)

// Bitmap directory entry flags (docs/bitmaps.md): in-use, auto (enabled), and the bits QEMU
// refuses.
const (
	bitmapFlagInUse    uint32 = 1 << 0
	bitmapFlagAuto     uint32 = 1 << 1
	bitmapFlagReserved uint32 = 0xfffffffc
)

// Limits of a bitmap, QEMU's BME_* constants.
const (
	bitmapMaxName       = 1023
	bitmapMinGranBits   = 9
	bitmapMaxGranBits   = 31
	bitmapMaxPhysBytes  = 0x20000000 // the table's clusters, in bytes: bounds the bits in RAM
	bitmapTypeDirtyTrak = 1
)

// Offsets inside a directory entry (format.go: bitmapDirEntryFixedSize).
const (
	bitmapEntFlags    = 12
	bitmapEntNameSize = 18
	bitmapEntExtra    = 20
)

// bitmapEntry is one directory entry.
type bitmapEntry struct {
	tableOff  HostOffset
	tableSize uint32 // entries
	flags     uint32
	granBits  uint8
	name      string
}

func (e *bitmapEntry) inUse() bool   { return e.flags&bitmapFlagInUse != 0 }
func (e *bitmapEntry) enabled() bool { return e.flags&bitmapFlagAuto != 0 }

// bitmapEntrySize is the bytes one entry takes (QEMU's calc_dir_entry_size; no extra data).
func bitmapEntrySize(name string) uint64 {
	return pad8(bitmapDirEntryFixedSize + uint64(len(name)))
}

// bitmapDirError is a directory QEMU refuses to load; its text is QEMU's.
type bitmapDirError struct{ msg string }

func (e *bitmapDirError) Error() string { return e.msg }

// parseBitmapDirectory walks raw, which must hold exactly count entries, as
// bitmap_list_load does, and checks each entry as check_dir_entry does against the cluster
// size and the virtual disk size. Its errors carry QEMU's words.
func parseBitmapDirectory(raw []byte, count uint32, cs, diskSize uint64) ([]bitmapEntry, error) {
	broken := &bitmapDirError{"Broken bitmap directory"}
	var out []bitmapEntry
	pos := uint64(0)
	for pos < uint64(len(raw)) {
		if pos+bitmapDirEntryFixedSize > uint64(len(raw)) {
			return nil, broken
		}
		if uint32(len(out)) >= count {
			return nil, &bitmapDirError{"More bitmaps found than specified in header extension"}
		}
		r := readBuf(raw[pos:])
		e := bitmapEntry{tableOff: HostOffset(r.u64()), tableSize: r.u32(), flags: r.u32()}
		typ := r.u8()
		e.granBits = r.u8()
		nameSize := uint64(r.u16())
		extra := uint64(r.u32())
		n := pad8(bitmapDirEntryFixedSize + extra + nameSize)
		if pos+n > uint64(len(raw)) {
			return nil, broken
		}
		if extra != 0 {
			return nil, &bitmapDirError{"Bitmap extra data is not supported"}
		}
		e.name = string(raw[pos+bitmapDirEntryFixedSize : pos+bitmapDirEntryFixedSize+nameSize])
		if !e.valid(typ, nameSize, cs, diskSize) {
			return nil, &bitmapDirError{fmt.Sprintf("Bitmap '%s' doesn't satisfy the constraints", e.name)}
		}
		out = append(out, e)
		pos += n
	}
	if uint32(len(out)) != count {
		return nil, &bitmapDirError{"Less bitmaps found than specified in header extension"}
	}
	return out, nil
}

// valid is QEMU's check_dir_entry: a bitmap not in use must have a table large enough for the
// disk (one saved before a resize, and left in-use, need not).
func (e *bitmapEntry) valid(typ uint8, nameSize, cs, diskSize uint64) bool {
	if e.tableSize == 0 || e.tableOff == 0 || uint64(e.tableOff)%cs != 0 || e.tableSize > maxBitmapTableEntries ||
		e.granBits > bitmapMaxGranBits || e.granBits < bitmapMinGranBits || e.flags&bitmapFlagReserved != 0 ||
		nameSize > bitmapMaxName || typ != bitmapTypeDirtyTrak {
		return false
	}
	phys := uint64(e.tableSize) * cs
	if phys > bitmapMaxPhysBytes {
		return false
	}
	return e.inUse() || diskSize <= (phys*8)<<e.granBits
}

// encodeBitmapDirectory is the directory holding es, as bitmap_list_store writes it.
func encodeBitmapDirectory(es []bitmapEntry) []byte {
	size := uint64(0)
	for _, e := range es {
		size += bitmapEntrySize(e.name)
	}
	raw := make([]byte, size)
	pos := uint64(0)
	for _, e := range es {
		b := raw[pos:]
		binary.BigEndian.PutUint64(b[0:], uint64(e.tableOff))
		binary.BigEndian.PutUint32(b[8:], e.tableSize)
		binary.BigEndian.PutUint32(b[bitmapEntFlags:], e.flags)
		b[16] = bitmapTypeDirtyTrak
		b[17] = e.granBits
		binary.BigEndian.PutUint16(b[bitmapEntNameSize:], uint16(len(e.name)))
		binary.BigEndian.PutUint32(b[bitmapEntExtra:], 0)
		copy(b[bitmapDirEntryFixedSize:], e.name)
		pos += bitmapEntrySize(e.name)
	}
	return raw
}

// bitmapsExtDataOffset finds the bitmaps header extension in the first cluster and returns
// the file offset of its data (count, reserved, directory size, directory offset), the place
// a store switches the directory pointer in (bitmap_store.go).
func (img *Image) bitmapsExtDataOffset() (uint64, error) {
	end := img.geo.ClusterSize()
	if bo := img.hdr.BackingFileOffset; bo != 0 && bo < end {
		end = bo
	}
	area := make([]byte, end)
	if err := readAtFull(img.file, area, 0); err != nil {
		return 0, fmt.Errorf("qcow2: read the header extensions: %w", err)
	}
	for off := uint64(img.hdr.HeaderLength); off+extHeaderSize <= end; {
		typ := binary.BigEndian.Uint32(area[off:])
		n := uint64(binary.BigEndian.Uint32(area[off+4:]))
		if typ == 0 {
			break
		}
		if typ == extBitmaps && n == bitmapsExtSize && off+extHeaderSize+n <= end {
			return off + extHeaderSize, nil
		}
		off += extHeaderSize + pad8(n)
	}
	return 0, corruptf("the bitmaps header extension is gone from the first cluster")
}

// bitmapsConsistent reports whether the header lists bitmaps that QEMU would load: the
// extension is present and its autoclear bit set.
func (h *Header) bitmapsConsistent() bool {
	b := h.Extensions.Bitmaps
	return b != nil && b.Count > 0 && h.Autoclear&AutoclearBitmaps != 0
}
