// Persistent dirty bitmaps: qnbd does not update them, so before its first write it marks every
// bitmap in the directory in-use (inconsistent), as QEMU's own writer does while it runs.
package qcow2

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// bitmapFlagInUse is bit 0 of a bitmap directory entry's flags: "The bitmap was not saved
// correctly and may be inconsistent" (QEMU's BME_FLAG_IN_USE).
const bitmapFlagInUse uint32 = 1 << 0

// Offsets inside a bitmap directory entry (see bitmapDirEntryFixedSize).
const (
	bitmapEntFlags    = 12
	bitmapEntNameSize = 18
	bitmapEntExtra    = 20
	bitmapMaxName     = 1023 // QEMU's BME_MAX_NAME_SIZE
)

// bitmapsConsistent reports whether the header lists bitmaps that QEMU would load: the
// extension is present and its autoclear bit set.
func (h *Header) bitmapsConsistent() bool {
	b := h.Extensions.Bitmaps
	return b != nil && b.Count > 0 && h.Autoclear&AutoclearBitmaps != 0
}

// bitmapDirectory is the bitmap directory read into memory, with where each entry starts.
type bitmapDirectory struct {
	raw     []byte
	entries []int // byte offset of each entry in raw
	names   []string
}

// readBitmapDirectory reads and walks the directory the header points at. Its size was bounded
// by Header.Validate (at most MaxBitmapDirectoryBytes, inside the file); every entry is
// checked to lie inside it.
func (img *Image) readBitmapDirectory() (*bitmapDirectory, error) {
	b := img.hdr.Extensions.Bitmaps
	d := &bitmapDirectory{raw: make([]byte, b.DirectorySize)}
	if err := readAtFull(img.file, d.raw, b.DirectoryStart); err != nil {
		return nil, fmt.Errorf("qcow2: read the bitmap directory: %w", err)
	}
	pos := uint64(0)
	for i := uint32(0); i < b.Count; i++ {
		if pos+bitmapDirEntryFixedSize > uint64(len(d.raw)) {
			return nil, corruptf("bitmap directory entry %d runs past the end of the %d-byte directory", i, len(d.raw))
		}
		e := d.raw[pos:]
		nameSize := uint64(binary.BigEndian.Uint16(e[bitmapEntNameSize:]))
		extra := uint64(binary.BigEndian.Uint32(e[bitmapEntExtra:]))
		n := pad8(bitmapDirEntryFixedSize + extra + nameSize)
		if nameSize == 0 || nameSize > bitmapMaxName || extra > uint64(len(d.raw)) || pos+n > uint64(len(d.raw)) {
			return nil, corruptf("bitmap directory entry %d is invalid (name %d bytes, extra data %d bytes)", i, nameSize, extra)
		}
		d.entries = append(d.entries, int(pos))
		d.names = append(d.names, string(e[bitmapDirEntryFixedSize+extra:bitmapDirEntryFixedSize+extra+nameSize]))
		pos += n
	}
	return d, nil
}

// markBitmapsInUse sets the in-use flag of every persistent bitmap before the image is first
// changed, with mu held. QEMU does the same when it opens an image read-write (it marks the
// bitmaps in-use until it stores them again on close), and its tools read the result as
// "bitmaps not maintained": qemu-img check counts their clusters (no leaks), qemu-img info
// lists them with the in-use flag, and QEMU refuses to use them until they are removed.
//
// The update follows QEMU's update_ext_header_and_dir_in_place: the autoclear bit goes off
// (header, sync), the directory is rewritten in place (sync), and the bit comes back with the
// header update that prepareWrite writes next. A crash in between leaves the bit off: the
// bitmaps are then ignored and their clusters count as leaks, which QEMU repairs. h is the
// header prepareWrite is about to write; it keeps the bit. rewrite says that prepareWrite
// must write h even if it equals img.hdr: the bit is off on disk.
//
// img.hdr keeps the bit throughout: if a later step fails (the directory write, or
// prepareWrite's header write), the next attempt finds the bitmaps still to be marked, or
// marked but the bit off on disk, and puts it back, instead of taking the bit as gone and
// dropping the bitmaps (their clusters would leak). Writing the bit back meanwhile (another
// header update) is harmless: no guest write happens before prepareWrite succeeds, so the
// bitmaps still describe the data.
func (img *Image) markBitmapsInUse(h *Header) (rewrite bool, err error) {
	if !img.hdr.bitmapsConsistent() {
		return false, nil
	}
	d, err := img.readBitmapDirectory()
	if err != nil {
		return false, fmt.Errorf("%w; qnbd does not write to an image whose bitmaps it cannot mark in-use (QEMU does not open it)", err)
	}
	changed := false
	for _, at := range d.entries {
		f := binary.BigEndian.Uint32(d.raw[at+bitmapEntFlags:])
		if f&bitmapFlagInUse == 0 {
			binary.BigEndian.PutUint32(d.raw[at+bitmapEntFlags:], f|bitmapFlagInUse)
			changed = true
		}
	}
	if !changed {
		// Marked already; by an earlier attempt that failed after turning the bit off?
		return img.bitmapsBitOffOnDisk(), nil
	}
	img.log.Warn("qcow2: qnbd does not maintain persistent dirty bitmaps; marking them in-use (inconsistent) before the first write",
		"image", img.name(), "bitmaps", strings.Join(d.names, ","))
	off := img.hdr
	off.Autoclear &^= AutoclearBitmaps
	if err := img.writeHeaderSync(&off); err != nil {
		return false, err
	}
	dir := img.hdr.Extensions.Bitmaps.DirectoryStart
	if err := img.checkMetadataWrite(dir, uint64(len(d.raw)), metaBitmapDir, 0); err != nil {
		return false, err
	}
	if _, err := img.file.WriteAt(d.raw, int64(dir)); err != nil {
		return false, fmt.Errorf("qcow2: write the bitmap directory: %w", err)
	}
	if err := img.file.Sync(); err != nil {
		return false, fmt.Errorf("qcow2: sync the bitmap directory: %w", err)
	}
	h.Autoclear |= AutoclearBitmaps
	return true, nil
}

// bitmapsBitOffOnDisk reports whether the header in the file has the bitmaps autoclear bit
// off (or cannot be read: writing the header again is harmless).
func (img *Image) bitmapsBitOffOnDisk() bool {
	var b [8]byte
	if err := readAtFull(img.file, b[:], offAutoclearFeatures); err != nil {
		return true
	}
	return binary.BigEndian.Uint64(b[:])&AutoclearBitmaps == 0
}

// bitmapResizeError refuses a resize of an image with persistent bitmaps: QEMU resizes
// bitmaps it maintains, qnbd maintains none (and QEMU refuses to resize an image whose
// bitmaps are in-use, as qnbd leaves them).
func (img *Image) bitmapResizeError() error {
	if !img.hdr.bitmapsConsistent() {
		return nil
	}
	names := "?"
	if d, err := img.readBitmapDirectory(); err == nil {
		names = strings.Join(d.names, "', '")
	}
	return fmt.Errorf("%w: cannot resize an image with persistent bitmaps ('%s'): qnbd does not maintain them; remove them first (qemu-img bitmap --remove)",
		ErrUnsupported, names)
}
