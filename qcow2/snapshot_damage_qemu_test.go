// Open against QEMU on snapshot tables damaged in ways a poke of one field does not make: a
// truncated table, the 64 MiB table size limit at its boundary, the largest count, an
// offset that overflows, the extra-data limit at its boundary.
package qcow2

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// snapshotDamage turns an image (one snapshot "s1", 1 MiB, compat 1.1) into a damaged one.
type snapshotDamage struct {
	name string
	fn   func(t *testing.T, b []byte) []byte
	// slow: every QEMU open reads all 65536 entries (about 5 s), so only
	// TestOpenSnapshotDamageRefusals opens it, once. (Measured by hand: a write then marks the
	// image corrupt in QEMU and here alike, its new cluster overlapping the table, which runs
	// past the end of the file.)
	slow bool
}

// snapTableAt is the snapshot table offset of image b.
func snapTableAt(b []byte) int { return int(binary.BigEndian.Uint64(b[offSnapshotsOffset:])) }

// bigSnapshotTable moves the table to a new cluster at the end of b: s1's entry first (72
// bytes with its padding, as QEMU 7.2 writes it), then n entries with the longest ID and
// name (zeros) and 16 bytes of extra data each.
func bigSnapshotTable(t *testing.T, b []byte, n int) []byte {
	st := snapTableAt(b)
	first := b[st:]
	extra := int(binary.BigEndian.Uint32(first[36:]))
	idLen, nameLen := int(binary.BigEndian.Uint16(first[12:])), int(binary.BigEndian.Uint16(first[14:]))
	firstLen := snapshotFixedSize + extra + idLen + nameLen
	if firstLen > 128 {
		t.Fatalf("unexpected first entry: %d bytes", firstLen)
	}
	at := (len(b) + 65535) &^ 65535
	pos := at + (firstLen+7)&^7
	const entry = snapshotFixedSize + 16 + 65535 + 65535
	out := make([]byte, pos+(n-1)*((entry+7)&^7)+snapshotFixedSize)
	copy(out, b)
	copy(out[at:], first[:firstLen])
	for range n {
		h := out[pos:]
		binary.BigEndian.PutUint16(h[12:], 65535)
		binary.BigEndian.PutUint16(h[14:], 65535)
		binary.BigEndian.PutUint32(h[36:], 16)
		pos += (entry + 7) &^ 7
	}
	binary.BigEndian.PutUint32(out[offNbSnapshots:], uint32(n+1))
	binary.BigEndian.PutUint64(out[offSnapshotsOffset:], uint64(at))
	return out
}

func snapshotDamages() []snapshotDamage {
	set32 := func(rel, v int) func(*testing.T, []byte) []byte {
		return func(_ *testing.T, b []byte) []byte {
			binary.BigEndian.PutUint32(b[snapTableAt(b)+rel:], uint32(v))
			return b
		}
	}
	return []snapshotDamage{
		{name: "truncated-at-table", fn: func(_ *testing.T, b []byte) []byte { return b[:snapTableAt(b)] }},
		{name: "truncated-in-header", fn: func(_ *testing.T, b []byte) []byte { return b[:snapTableAt(b)+20] }},
		{name: "truncated-in-name", fn: func(_ *testing.T, b []byte) []byte {
			st := snapTableAt(b)
			return b[:st+snapshotFixedSize+int(binary.BigEndian.Uint32(b[st+36:]))+1]
		}},
		{name: "count-max", fn: func(_ *testing.T, b []byte) []byte {
			binary.BigEndian.PutUint32(b[offNbSnapshots:], maxSnapshots)
			return b
		}, slow: true},
		{name: "count-over-max", fn: func(_ *testing.T, b []byte) []byte {
			binary.BigEndian.PutUint32(b[offNbSnapshots:], maxSnapshots+1)
			return b
		}},
		{name: "offset-overflows", fn: func(_ *testing.T, b []byte) []byte {
			binary.BigEndian.PutUint64(b[offSnapshotsOffset:], 0x7fffffffffff0000)
			return b
		}},
		{name: "extra-at-limit", fn: set32(36, maxSnapshotExtraData)},
		{name: "extra-over-limit", fn: set32(36, maxSnapshotExtraData+1)},
		{name: "extra-none-v3", fn: set32(36, 0)},
		// s1's entry and 511 of the largest entries (131126 bytes, 131128 padded) fit in the
		// 64 MiB QEMU allows; one more does not.
		{name: "table-at-size-limit", fn: func(t *testing.T, b []byte) []byte { return bigSnapshotTable(t, b, 511) }},
		{name: "table-over-size-limit", fn: func(t *testing.T, b []byte) []byte { return bigSnapshotTable(t, b, 512) }},
	}
}

// TestOpenSnapshotDamageLikeQemu: on each damage, Open (read-only and read-write, and with
// the snapshot requested) succeeds exactly where QEMU does, and behaves as QEMU afterwards;
// a refusal is a format error.
func TestOpenSnapshotDamageLikeQemu(t *testing.T) {
	for _, d := range snapshotDamages() {
		if d.slow {
			continue
		}
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := engCreate(t, dir, "b.qcow2", "compat=1.1", "1M")
			engQemu(t, "qemu-io", "-c", "write -P 1 0 64k", img)
			engQemu(t, "qemu-img", "snapshot", "-c", "s1", img)
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			compareDamagedSnapshotOpen(t, dir, d.fn(t, b))
		})
	}
}

// TestOpenSnapshotDamageRefusals: what QEMU refuses at open, with the reason QEMU gives, so
// that the comparison above cannot pass by both sides accepting everything.
func TestOpenSnapshotDamageRefusals(t *testing.T) {
	want := map[string]string{
		"count-over-max":        "Snapshot table too large",
		"offset-overflows":      "Failed to read snapshot table",
		"extra-over-limit":      "Too much extra metadata",
		"table-over-size-limit": "Snapshot table is too big",
	}
	for _, d := range snapshotDamages() {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := engCreate(t, dir, "b.qcow2", "compat=1.1", "1M")
			engQemu(t, "qemu-img", "snapshot", "-c", "s1", img)
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			if err := writeSparse(img, d.fn(t, b)); err != nil {
				t.Fatal(err)
			}
			qok, qout := runOK("qemu-io", "-r", "-f", "qcow2", "-c", "read 0 512", img)
			reason, refused := want[d.name]
			if qok == refused || (refused && !strings.Contains(qout, reason)) {
				t.Fatalf("qemu-io: %s (expected refused %v: %q)", qout, refused, reason)
			}
			im, err := Open(img, OpenOptions{ReadOnly: true})
			if (err != nil) != refused {
				t.Fatalf("Open: %v, want refused %v", err, refused)
			}
			if err == nil {
				im.Close()
			}
			if refused || d.slow {
				return
			}
			// Serving s1 (-l): where QEMU cannot find it in the damaged table, the error says
			// the table is damaged.
			qok, qout = runOK("qemu-img", "convert", "-l", "s1", "-O", "raw", img, filepath.Join(dir, "s1.raw"))
			im, err = Open(img, OpenOptions{Snapshot: "s1"})
			if err == nil {
				im.Close()
			}
			if (err == nil) != qok {
				t.Fatalf("Open s1: %v, qemu-img convert -l: %s", err, qout)
			}
			if err != nil && (!errors.Is(err, ErrSnapshotNotFound) || !strings.Contains(err.Error(), "the snapshot table is damaged")) {
				t.Errorf("Open s1: %v, want not found in a damaged table", err)
			}
		})
	}
}

// TestOpenSnapshotNotFoundIntactTable: a name that is not in an intact table is only not
// found (no word of damage).
func TestOpenSnapshotNotFoundIntactTable(t *testing.T) {
	img := engCreate(t, t.TempDir(), "b.qcow2", "compat=1.1", "1M")
	engQemu(t, "qemu-img", "snapshot", "-c", "s1", img)
	_, err := Open(img, OpenOptions{Snapshot: "s2"})
	if !errors.Is(err, ErrSnapshotNotFound) || strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Open s2: %v", err)
	}
}

// writeSparse writes b to path leaving its all-zero 64 KiB blocks as holes.
func writeSparse(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := f.Truncate(int64(len(b))); err != nil {
		f.Close()
		return err
	}
	const blk = 64 << 10
	zero := make([]byte, blk)
	for off := 0; off < len(b); off += blk {
		p := b[off:min(off+blk, len(b))]
		if string(p) == string(zero[:len(p)]) {
			continue
		}
		if _, err := f.WriteAt(p, int64(off)); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}
