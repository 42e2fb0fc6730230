// The persistent dirty bitmaps of a qcow2 image, as qemu-img info lists them.
package imgfmt

import (
	"encoding/binary"
	"fmt"

	"github.com/qnbd/qnbd/qcow2"
)

// Bitmap is one persistent dirty bitmap ("Bitmap directory entry" in qcow2.txt).
type Bitmap struct {
	Name        string
	Granularity uint64
	InUse, Auto bool
}

// Bitmap directory entry layout: "0 - 7: bitmap_table_offset, 8 - 11: bitmap_table_size,
// 12 - 15: flags (bit 0: in_use, bit 1: auto), 16: type, 17: granularity_bits,
// 18 - 19: name_size, 20 - 23: extra_data_size, then extra data, the name, padding to 8".
const (
	bitmapEntryFixed = 24
	bitmapFlagInUse  = 1 << 0
	bitmapFlagAuto   = 1 << 1
	bitmapMaxName    = 1023 // QEMU's BME_MAX_NAME_SIZE
)

// readBitmaps parses the bitmap directory, which QEMU only trusts while the bitmaps autoclear
// bit is set. Everything is bounded by the directory size the header declares.
func readBitmaps(s qcow2.Storage, h *qcow2.Header) ([]Bitmap, error) {
	ext := h.Extensions.Bitmaps
	if ext == nil || ext.Count == 0 || h.Autoclear&qcow2.AutoclearBitmaps == 0 {
		return nil, nil
	}
	if ext.DirectorySize > qcow2.MaxBitmapDirectoryBytes || ext.Count > qcow2.MaxBitmaps {
		return nil, fmt.Errorf("bitmap directory of %d bytes / %d entries is too large", ext.DirectorySize, ext.Count)
	}
	dir := make([]byte, ext.DirectorySize)
	if _, err := s.ReadAt(dir, int64(ext.DirectoryStart)); err != nil {
		return nil, fmt.Errorf("reading the bitmap directory: %w", err)
	}
	var out []Bitmap
	for off := 0; len(out) < int(ext.Count); {
		if off+bitmapEntryFixed > len(dir) {
			return nil, fmt.Errorf("bitmap directory entry %d runs past the directory", len(out))
		}
		e := dir[off:]
		flags := binary.BigEndian.Uint32(e[12:])
		gbits := e[17]
		nameSize := int(binary.BigEndian.Uint16(e[18:]))
		extra := int(binary.BigEndian.Uint32(e[20:]))
		end := bitmapEntryFixed + extra + nameSize
		if nameSize > bitmapMaxName || extra > len(dir) || off+end > len(dir) || gbits > 63 {
			return nil, fmt.Errorf("bitmap directory entry %d is invalid", len(out))
		}
		out = append(out, Bitmap{
			Name:        string(e[bitmapEntryFixed+extra : end]),
			Granularity: 1 << gbits,
			InUse:       flags&bitmapFlagInUse != 0,
			Auto:        flags&bitmapFlagAuto != 0,
		})
		off += (end + 7) &^ 7
	}
	return out, nil
}
