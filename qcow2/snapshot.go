// The internal snapshot table: a bounded parse of its entries, and snapshot lookup by ID or name.
package qcow2

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
)

// Snapshot is one entry of the snapshot table ("Snapshot table entry" in qcow2.txt).
type Snapshot struct {
	// ID is the unique ID string ("1", "2", ...), Name the user's name. Both are cut at the
	// first NUL byte, as QEMU, which keeps them as C strings, sees them.
	ID, Name string
	// L1Offset and L1Size locate the snapshot's L1 table. ReadSnapshots has checked that the
	// table is cluster aligned, at most MaxL1Bytes long and inside the image file;
	// LoadSnapshots leaves that to checkSnapshotL1.
	L1Offset HostOffset
	L1Size   uint32
	// Date is when the snapshot was taken.
	Date time.Time
	// VMClock is how long the guest had run when the snapshot was taken.
	VMClock time.Duration
	// VMStateSize is the size of the saved VM state (0 for a disk-only snapshot): the 64-bit
	// extra-data field when present, else the 32-bit one.
	VMStateSize uint64
	// DiskSize is the virtual disk size when the snapshot was taken. Entries without it
	// (version 2 images written by old QEMU) get the image's current size, as QEMU assumes.
	DiskSize uint64
	// ICount is the guest instruction count (record/replay), or -1 when not stored.
	ICount int64
	// ExtraData is the entry's extra data as stored, known fields included, so that a rewrite
	// of the table can keep fields qnbd does not know ("Unknown fields must be ignored").
	ExtraData []byte
	// EntryOffset is where the entry starts in the image file, and EntrySize its length up to
	// the end of the name (without padding).
	EntryOffset HostOffset
	EntrySize   uint64
}

// Offsets of the known extra-data fields, relative to the extra data ("Byte 40 - 47: Size of
// the VM state ... 48 - 55: Virtual disk size"; QEMU adds the instruction count at 56 - 63).
const (
	snapExtraVMState = 0
	snapExtraDisk    = 8
	snapExtraICount  = 16
)

// ReadSnapshots parses the snapshot table described by h strictly, to the letter of the spec
// (Open uses it to say why a snapshot asked for with -l is missing; check reads the table as
// QEMU's check does: check_snaprepair.go), bounding everything it reads by QEMU's limits
// (docs/qcow2-spec-notes.md): at most maxSnapshots entries and maxSnapshotTableBytes in all,
// inside the file, each entry's extra data at most maxSnapshotExtraData bytes and, in version
// 3 images, at least minSnapshotExtraDataV3, and each snapshot's L1 table cluster aligned, at
// most MaxL1Bytes and inside the file. A violation is a *FormatError naming the entry and field. It reads the
// table sequentially and allocates in proportion to what it has read, never to a length it
// has not checked.
func ReadSnapshots(s Storage, h *Header) ([]Snapshot, error) { return readSnapshots(s, h, true) }

// LoadSnapshots parses the snapshot table as QEMU does when it opens an image
// (qcow2_read_snapshots): only the limits QEMU enforces there refuse the table (at most
// maxSnapshots entries and maxSnapshotTableBytes in all, at most maxSnapshotExtraData bytes of
// extra data per entry); bytes past the end of the file read as zeros, version 3 entries may
// have less extra data than the spec asks, and the snapshots' L1 tables are not checked:
// checkSnapshotL1 does that where a snapshot's L1 table is used. Everything read is still
// bounded as in ReadSnapshots.
func LoadSnapshots(s Storage, h *Header) ([]Snapshot, error) { return readSnapshots(s, h, false) }

// checkSnapshotL1 checks a snapshot's L1 table as QEMU does before using it
// (qcow2_validate_table "Snapshot L1 table"): at most MaxL1Bytes, cluster aligned, and not
// overflowing the largest file offset. It may lie past the end of the file (it reads as
// zeros there).
func checkSnapshotL1(h *Header, sn Snapshot) error {
	g := h.Geometry()
	at := int64(sn.EntryOffset)
	if uint64(sn.L1Size)*l1EntrySize > MaxL1Bytes {
		return formatErr(at+8, "snapshot l1_size", sn.L1Size, "snapshot %s: a %d-byte L1 table exceeds the %d-byte limit (Snapshot L1 table too large)",
			sn.ID, uint64(sn.L1Size)*l1EntrySize, MaxL1Bytes)
	}
	if sn.L1Offset.inCluster(g) != 0 || uint64(sn.L1Offset) > math.MaxInt64-uint64(sn.L1Size)*l1EntrySize {
		return formatErr(at, "snapshot l1_table_offset", uint64(sn.L1Offset), "snapshot %s: Snapshot L1 table offset invalid", sn.ID)
	}
	return nil
}

func readSnapshots(s Storage, h *Header, strict bool) ([]Snapshot, error) {
	if h.SnapshotCount == 0 {
		return nil, nil
	}
	if h.SnapshotCount > maxSnapshots {
		return nil, formatErr(offNbSnapshots, "nb_snapshots", h.SnapshotCount, "must be at most %d", maxSnapshots)
	}
	g := h.Geometry()
	start := h.SnapshotsOffset
	if (strict && start == 0) || start.inCluster(g) != 0 {
		return nil, formatErr(offSnapshotsOffset, "snapshots_offset", uint64(start), "must be a non-zero multiple of the %d-byte cluster size", g.ClusterSize())
	}
	fileSize, err := s.Size()
	if err != nil {
		return nil, fmt.Errorf("qcow2: size of image file: %w", err)
	}
	var src io.Reader
	limit := uint64(maxSnapshotTableBytes)
	if strict {
		if uint64(start) >= uint64(fileSize) {
			return nil, formatErr(offSnapshotsOffset, "snapshots_offset", uint64(start), "lies past the end of the %d-byte file", fileSize)
		}
		// The table may extend at most to the end of the file and at most maxSnapshotTableBytes.
		limit = min(uint64(fileSize)-uint64(start), maxSnapshotTableBytes)
		src = io.NewSectionReader(s, int64(start), int64(limit))
	} else {
		if uint64(start) > math.MaxInt64-limit {
			return nil, formatErr(offSnapshotsOffset, "snapshots_offset", uint64(start), "the snapshot table there overflows the largest file offset")
		}
		src = &zeroTailReader{s: s, off: uint64(start), end: uint64(start) + limit}
	}
	r := &tableReader{
		r:     bufio.NewReaderSize(src, 64<<10),
		start: start,
		limit: limit,
		full:  limit == maxSnapshotTableBytes,
	}
	snaps := make([]Snapshot, 0, min(h.SnapshotCount, 1024))
	for i := range h.SnapshotCount {
		sn, err := r.entry(i, h, g, uint64(fileSize), strict)
		if err != nil {
			return nil, err
		}
		snaps = append(snaps, sn)
	}
	return snaps, nil
}

// zeroTailReader reads a store sequentially from off to end; what lies past the end of the
// store reads as zeros, as QEMU's bdrv_pread returns it.
type zeroTailReader struct {
	s        Storage
	off, end uint64
}

func (z *zeroTailReader) Read(p []byte) (int, error) {
	if z.off >= z.end {
		return 0, io.EOF
	}
	p = p[:min(uint64(len(p)), z.end-z.off)]
	if err := readAtFull(z.s, p, HostOffset(z.off)); err != nil {
		return 0, err
	}
	z.off += uint64(len(p))
	return len(p), nil
}

// tableReader reads the snapshot table sequentially, tracking the position and refusing to
// read past limit.
type tableReader struct {
	r     *bufio.Reader
	start HostOffset
	pos   uint64 // bytes consumed, relative to start
	limit uint64
	full  bool // limit is the table size cap, not the end of the file
}

// next returns the next n bytes (valid until the next call), or a *FormatError if they would
// run past the table's limit.
func (t *tableReader) next(n uint64, field string, i uint32) ([]byte, error) {
	if n > t.limit-t.pos {
		why := fmt.Sprintf("runs past the end of the file (%d bytes after the table start)", t.limit)
		if t.full {
			why = fmt.Sprintf("makes the snapshot table larger than %d bytes", uint64(maxSnapshotTableBytes))
		}
		return nil, formatErr(int64(uint64(t.start)+t.pos), fmt.Sprintf("snapshot[%d].%s", i, field), n, "%s", why)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(t.r, b); err != nil {
		return nil, fmt.Errorf("qcow2: read snapshot table: %w", err)
	}
	t.pos += n
	return b, nil
}

func (t *tableReader) entry(i uint32, h *Header, g Geometry, fileSize uint64, strict bool) (Snapshot, error) {
	// "Padding to round up the snapshot table entry size to the next multiple of 8."
	if pad := pad8(t.pos) - t.pos; pad > 0 {
		if _, err := t.next(pad, "padding", i); err != nil {
			return Snapshot{}, err
		}
	}
	entryOff := t.start.Add(t.pos)
	fixed, err := t.next(snapshotFixedSize, "header", i)
	if err != nil {
		return Snapshot{}, err
	}
	sn, idLen, nameLen, extraLen := decodeSnapshotFixed(fixed, entryOff)

	field := func(name string) string { return fmt.Sprintf("snapshot[%d].%s", i, name) }
	at := func(rel int64) int64 { return int64(entryOff) + rel }
	if extraLen > maxSnapshotExtraData {
		return Snapshot{}, formatErr(at(36), field("extra_data_size"), extraLen, "must be at most %d", maxSnapshotExtraData)
	}
	if strict && h.Version >= 3 && extraLen < minSnapshotExtraDataV3 {
		return Snapshot{}, formatErr(at(36), field("extra_data_size"), extraLen, "version 3 images need at least %d bytes (up to byte 55 of the entry)", minSnapshotExtraDataV3)
	}
	extra, err := t.next(uint64(extraLen), "extra_data", i)
	if err != nil {
		return Snapshot{}, err
	}
	sn.setExtraData(extra, h.Size)
	id, err := t.next(uint64(idLen), "id", i)
	if err != nil {
		return Snapshot{}, err
	}
	name, err := t.next(uint64(nameLen), "name", i)
	if err != nil {
		return Snapshot{}, err
	}
	sn.ID, sn.Name = cString(id), cString(name)
	sn.EntrySize = uint64(t.start.Add(t.pos) - entryOff)
	if !strict {
		return sn, nil
	}

	// The snapshot's L1 table: QEMU checks it with qcow2_validate_table(..., QCOW_MAX_L1_SIZE,
	// "Snapshot L1 table") before using it; we check it once, here.
	if uint64(sn.L1Size)*l1EntrySize > MaxL1Bytes {
		return Snapshot{}, formatErr(at(8), field("l1_size"), sn.L1Size, "a %d-byte L1 table exceeds the %d-byte limit", uint64(sn.L1Size)*l1EntrySize, MaxL1Bytes)
	}
	if sn.L1Size > 0 {
		if err := checkTable(field("l1_table_offset"), at(0), sn.L1Offset, uint64(sn.L1Size)*l1EntrySize, g, fileSize); err != nil {
			return Snapshot{}, err
		}
	} else if sn.L1Offset.inCluster(g) != 0 {
		return Snapshot{}, formatErr(at(0), field("l1_table_offset"), uint64(sn.L1Offset), "not aligned to a %d-byte cluster", g.ClusterSize())
	}
	return sn, nil
}

// cString returns b up to its first NUL byte.
func cString(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// snapshotTableSize returns the bytes the snapshot table occupies from h.SnapshotsOffset up to
// the end of the last entry's name (what QEMU calls snapshots_size), for refcounting it.
func snapshotTableSize(h *Header, snaps []Snapshot) uint64 {
	if len(snaps) == 0 {
		return 0
	}
	last := snaps[len(snaps)-1]
	return uint64(last.EntryOffset) + last.EntrySize - uint64(h.SnapshotsOffset)
}

// snapshotOptPrefix introduces qemu-nbd's structured form of -l ("snapshot.id=[ID],
// snapshot.name=[NAME]").
const snapshotOptPrefix = "snapshot."

// findSnapshot resolves a snapshot the way qemu-nbd -l/--load-snapshot does. The parameter is
// either "snapshot.id=ID,snapshot.name=NAME" (either part optional, at least one present; with
// both, one snapshot must match both; a comma inside a value is written ",,"), or a bare string
// that is matched against IDs first and then against names.
func findSnapshot(snaps []Snapshot, param string) (Snapshot, error) {
	if !strings.HasPrefix(param, snapshotOptPrefix) {
		for _, sn := range snaps {
			if sn.ID == param {
				return sn, nil
			}
		}
		for _, sn := range snaps {
			if sn.Name == param {
				return sn, nil
			}
		}
		return Snapshot{}, fmt.Errorf("%w: no snapshot has the ID or name %q", ErrSnapshotNotFound, param)
	}
	opts, err := parseSnapshotOpts(param)
	if err != nil {
		return Snapshot{}, err
	}
	id, hasID := opts["snapshot.id"]
	name, hasName := opts["snapshot.name"]
	for _, sn := range snaps {
		if (!hasID || sn.ID == id) && (!hasName || sn.Name == name) {
			return sn, nil
		}
	}
	return Snapshot{}, fmt.Errorf("%w: no snapshot matches %q", ErrSnapshotNotFound, param)
}

// parseSnapshotOpts splits "key=value,key=value" with QemuOpts' ",," escape and accepts only
// the snapshot.id and snapshot.name keys; a repeated key keeps its last value.
func parseSnapshotOpts(param string) (map[string]string, error) {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(param); i++ {
		if param[i] == ',' {
			if i+1 < len(param) && param[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(param[i])
	}
	parts = append(parts, cur.String())
	opts := map[string]string{}
	for _, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if !ok || (k != "snapshot.id" && k != "snapshot.name") {
			return nil, fmt.Errorf("qcow2: invalid snapshot parameter %q: want snapshot.id=ID and/or snapshot.name=NAME", param)
		}
		opts[k] = v
	}
	return opts, nil
}

// decodeSnapshotFixed decodes the 40 fixed bytes of a snapshot table entry at entry: the
// Snapshot's fixed fields, and the lengths of the ID, the name and the extra data that follow.
func decodeSnapshotFixed(fixed []byte, entry HostOffset) (sn Snapshot, idLen, nameLen uint16, extraLen uint32) {
	rb := readBuf(fixed[:snapshotFixedSize])
	sn = Snapshot{EntryOffset: entry, ICount: -1}
	sn.L1Offset = HostOffset(rb.u64())
	sn.L1Size = rb.u32()
	idLen, nameLen = rb.u16(), rb.u16()
	sec, nsec := rb.u32(), rb.u32()
	sn.Date = time.Unix(int64(sec), int64(nsec))
	sn.VMClock = time.Duration(rb.u64())
	sn.VMStateSize = uint64(rb.u32())
	return sn, idLen, nameLen, rb.u32()
}

// setExtraData keeps extra as the entry's extra data and takes from it the fields it is long
// enough to hold (64-bit VM state size, disk size, icount); without a disk size field the
// snapshot has the image's size, as QEMU assumes.
func (sn *Snapshot) setExtraData(extra []byte, imageSize uint64) {
	sn.ExtraData = extra
	sn.DiskSize = imageSize
	if len(extra) >= snapExtraVMState+8 {
		sn.VMStateSize = binary.BigEndian.Uint64(extra[snapExtraVMState:])
	}
	if len(extra) >= snapExtraDisk+8 {
		sn.DiskSize = binary.BigEndian.Uint64(extra[snapExtraDisk:])
	}
	if len(extra) >= snapExtraICount+8 {
		sn.ICount = int64(binary.BigEndian.Uint64(extra[snapExtraICount:]))
	}
}
