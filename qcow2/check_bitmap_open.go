// The bitmap verdicts of an open: what QEMU's qcow2_load_dirty_bitmaps refuses, at every open
// of an image (read-only ones and qemu-img check's included), before anything is read or
// written for the guest (docs/bitmaps.md, "Damaged bitmaps").
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// BitmapOpenError is an image refused at open because of its persistent bitmaps: a directory
// QEMU cannot parse, a bitmap entry outside its constraints, a bitmap table with a bad entry or
// of the wrong size, two bitmaps of one name. Error() is QEMU's own message (what follows
// "Could not open 'FILE': "); it matches ErrFormat, and Errno (EINVAL or EIO) with errors.Is.
//
// A refusal of the bitmaps header extension itself (bitmapsExtErr) also unwraps to the
// *FormatError that names the field.
type BitmapOpenError struct {
	Msg   string
	Errno syscall.Errno
	field error
}

func (e *BitmapOpenError) Error() string { return e.Msg }

// Unwrap is the FormatError naming the header field, if any.
func (e *BitmapOpenError) Unwrap() error { return e.field }

// Is makes the error match ErrFormat and its errno.
func (e *BitmapOpenError) Is(target error) bool { return target == ErrFormat || target == e.Errno }

// validateBitmapsAtOpen reads the bitmap directory of h from s (of fileSize bytes) and judges
// it as qcow2_load_dirty_bitmaps does in QEMU 7.2, for a disk of diskSize bytes:
//   - the directory must parse (bitmap_list_load: parseBitmapDirectory);
//   - bitmaps are created in directory order, and a name met twice is refused ("Bitmap
//     already exists: NAME"), unless the later one is in-use (QEMU skips it);
//   - each bitmap not in-use has its table read (bytes past the end of the file read as
//     zeros) and every entry checked (bitmap_table_load), then its size compared with what
//     the disk needs (load_bitmap_data). In-use bitmaps are not read.
//
// Bitmaps count only while the autoclear bit says the extension is consistent. The error is a
// *BitmapOpenError, or a plain one when s could not be read.
func validateBitmapsAtOpen(s Storage, h *Header, fileSize, diskSize uint64) error {
	if !h.bitmapsConsistent() {
		return nil
	}
	// QEMU's block layer sees whole 512-byte sectors (bdrv_getlength): a disk of 1 byte has
	// bitmaps of 0 bits, and a table of one entry is then the wrong size.
	diskSize &^= 511
	entries, err := readBitmapDirectory(s, h, fileSize, diskSize)
	if err != nil {
		return err
	}
	cs := h.Geometry().ClusterSize()
	seen := map[string]bool{}
	for i := range entries {
		e := &entries[i]
		if seen[e.name] {
			if e.inUse() {
				continue
			}
			return &BitmapOpenError{Msg: "Bitmap already exists: " + e.name, Errno: syscall.EINVAL}
		}
		seen[e.name] = true
		if e.inUse() {
			continue
		}
		if _, errno, err := readCheckedBitmapTable(s, e, cs, fileSize); err != nil {
			return err
		} else if errno != 0 {
			return &BitmapOpenError{
				Msg:   fmt.Sprintf("Could not read bitmap_table table from image for bitmap '%s': %s", e.name, qemuStrerror(errno)),
				Errno: errno,
			}
		}
		if want := bitmapTableEntriesFor(diskSize, e.granBits, cs); want != uint64(e.tableSize) {
			return &BitmapOpenError{
				Msg:   fmt.Sprintf("Could not read bitmap '%s' from image: Invalid argument", e.name),
				Errno: syscall.EINVAL,
			}
		}
	}
	return nil
}

// ValidateBitmaps judges the persistent bitmaps of the image in s, whose header is h, as every
// open does (validateBitmapsAtOpen): for callers that read an image without opening it. The
// error is a *BitmapOpenError with QEMU's words, or a failed read.
func ValidateBitmaps(s Storage, h *Header) error {
	size, err := s.Size()
	if err != nil {
		return fmt.Errorf("qcow2: size of the image file: %w", err)
	}
	return validateBitmapsAtOpen(s, h, uint64(size), h.Size)
}

// readBitmapDirectory reads and parses the directory (bitmap_list_load); a directory QEMU
// refuses is a *BitmapOpenError with QEMU's words.
func readBitmapDirectory(s Storage, h *Header, fileSize, diskSize uint64) ([]bitmapEntry, error) {
	b := h.Extensions.Bitmaps
	if b.DirectorySize == 0 {
		return nil, &BitmapOpenError{Msg: "Requested bitmap directory size is zero", Errno: syscall.EINVAL}
	}
	if uint64(b.DirectoryStart) > bdrvMaxLength-b.DirectorySize {
		// QEMU's bdrv_pread refuses a read reaching past its largest offset.
		return nil, &BitmapOpenError{Msg: "Failed to read bitmap directory: Input/output error", Errno: syscall.EIO}
	}
	// The header's validation bounds the directory to QEMU's limit (just under 64 MiB); past
	// the end of the file it reads as zeros, as QEMU reads it.
	raw := make([]byte, b.DirectorySize)
	if err := readAtZero(s, raw, uint64(b.DirectoryStart), fileSize); err != nil {
		return nil, fmt.Errorf("qcow2: Failed to read bitmap directory: %w", err)
	}
	entries, err := parseBitmapDirectory(raw, b.Count, h.Geometry().ClusterSize(), diskSize)
	if err != nil {
		return nil, &BitmapOpenError{Msg: err.Error(), Errno: syscall.EINVAL}
	}
	return entries, nil
}

// readCheckedBitmapTable reads the table of e as bitmap_table_load does: bytes past the end of
// the file read as zeros, a table reaching past QEMU's largest readable offset fails with EIO,
// and an entry with reserved bits set, or with an offset that is unaligned or comes with the
// all-ones flag, fails with EINVAL. That errno is returned apart from err, which is a failed
// read of s.
func readCheckedBitmapTable(s Storage, e *bitmapEntry, cs, fileSize uint64) ([]uint64, syscall.Errno, error) {
	n := uint64(e.tableSize) * 8
	if uint64(e.tableOff) > bdrvMaxLength-n {
		return nil, syscall.EIO, nil
	}
	raw := make([]byte, n)
	if err := readAtZero(s, raw, uint64(e.tableOff), fileSize); err != nil {
		return nil, 0, fmt.Errorf("qcow2: read the table of bitmap '%s': %w", e.name, err)
	}
	table := make([]uint64, e.tableSize)
	for i := range table {
		v := binary.BigEndian.Uint64(raw[i*8:])
		if !bitmapTableEntryValid(v, cs) {
			return nil, syscall.EINVAL, nil
		}
		table[i] = v
	}
	return table, 0, nil
}

// bitmapTableEntryValid is QEMU's check_table_entry (docs/bitmaps.md, "On disk").
func bitmapTableEntryValid(v, cs uint64) bool {
	off := v & bitmapEntryOffsetMask
	return v&bitmapEntryReservedMask == 0 && (off == 0 || (v&bitmapEntryAllOnes == 0 && off%cs == 0))
}

// bitmapTableEntriesFor is the table size a bitmap of a diskSize-byte disk at granularity
// 1<<granBits has: its bits serialised as whole 64-bit words, in clusters.
func bitmapTableEntriesFor(diskSize uint64, granBits uint8, cs uint64) uint64 {
	return (bitmapWords(diskSize, granBits)*8 + cs - 1) / cs
}

// qemuStrerror is the text QEMU prints for an errno a bitmap load or free fails with: glibc's
// strerror, which for these (EINVAL, EIO, EAGAIN, EFBIG) is Go's text capitalised.
func qemuStrerror(errno syscall.Errno) string {
	t := errno.Error()
	return strings.ToUpper(t[:1]) + t[1:]
}

// checkOpenBitmaps is the bitmap half of qemu-img check's open: an image whose bitmaps QEMU
// refuses to load is not checked at all ("Could not open"). A malformed header is left to
// the check, which reports it; a failed read fails the check.
func checkOpenBitmaps(s Storage) error {
	size, err := s.Size()
	if err != nil {
		return fmt.Errorf("qcow2: size of the image file: %w", err)
	}
	h, err := checkReadHeader(s, uint64(size))
	var fe *FormatError
	if errors.As(err, &fe) || errors.Is(err, ErrFormat) || errors.Is(err, ErrUnsupported) || errors.Is(err, ErrCorrupt) {
		return nil // the check reports a bad header in its own words
	}
	if err != nil {
		return err // a failed read fails the check, as it would the check's own header read
	}
	return validateBitmapsAtOpen(s, h, uint64(size), h.Size)
}
