package qcow2

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

func qemuIO(t testing.TB, img string, cmds ...string) {
	t.Helper()
	args := []string{}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("qemu-io", append(args, img)...).CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("failed")) {
		t.Fatalf("qemu-io %v: %v\n%s", cmds, err, out)
	}
}

// snapshotImage makes an image with three snapshots, data that differs between them, a resize
// between the second and the third (so disk sizes differ; not for version 2, which QEMU
// cannot resize once it has snapshots), and a third snapshot named "1",
// which is also the first one's ID.
func snapshotImage(t testing.TB, dir, compat string, clusterSize int) string {
	t.Helper()
	img := filepath.Join(dir, fmt.Sprintf("snap-%s-%d.qcow2", compat, clusterSize))
	qemuImgOutput(t, "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("compat=%s,cluster_size=%d", compat, clusterSize), img, "1M")
	qemuIO(t, img, "write -P 0x11 0 64k", "write -P 0x12 512k 4k")
	qemuImgOutput(t, "snapshot", "-c", "first", img)
	qemuIO(t, img, "write -P 0x22 0 8k", "write -P 0x23 900k 100k")
	qemuImgOutput(t, "snapshot", "-c", "with,comma", img)
	if compat != "0.10" { // QEMU cannot resize a v2 image that has snapshots
		qemuImgOutput(t, "resize", "-q", img, "3M")
		qemuIO(t, img, "write -P 0x33 2M 64k")
	}
	qemuImgOutput(t, "snapshot", "-c", "1", img)
	qemuIO(t, img, "write -P 0x44 0 1M")
	return img
}

type qemuSnapshotInfo struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	DateSec     int64  `json:"date-sec"`
	DateNsec    int64  `json:"date-nsec"`
	VMClockSec  int64  `json:"vm-clock-sec"`
	VMClockNsec int64  `json:"vm-clock-nsec"`
	VMStateSize uint64 `json:"vm-state-size"`
	ICount      *int64 `json:"icount"`
}

// TestReadSnapshotsFromQemuImg compares ReadSnapshots with `qemu-img info --output=json`, and
// the data reachable from each snapshot's L1 table with `qemu-img convert -l`.
func TestReadSnapshotsFromQemuImg(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		compat string
		cs     int
	}{{"1.1", 65536}, {"0.10", 65536}, {"1.1", 512}} {
		t.Run(fmt.Sprintf("%s-%d", c.compat, c.cs), func(t *testing.T) {
			img := snapshotImage(t, dir, c.compat, c.cs)
			var info struct {
				Snapshots []qemuSnapshotInfo `json:"snapshots"`
			}
			if err := json.Unmarshal(qemuImgOutput(t, "info", "--output=json", img), &info); err != nil {
				t.Fatal(err)
			}
			s := openStorage(t, img)
			h, err := ReadHeader(s)
			if err != nil {
				t.Fatal(err)
			}
			snaps, err := ReadSnapshots(s, h)
			if err != nil {
				t.Fatal(err)
			}
			if len(snaps) != 3 || len(info.Snapshots) != 3 {
				t.Fatalf("got %d snapshots, qemu-img lists %d", len(snaps), len(info.Snapshots))
			}
			for i, sn := range snaps {
				q := info.Snapshots[i]
				if sn.ID != q.ID || sn.Name != q.Name || sn.VMStateSize != q.VMStateSize ||
					!sn.Date.Equal(time.Unix(q.DateSec, q.DateNsec)) ||
					sn.VMClock != time.Duration(q.VMClockSec)*time.Second+time.Duration(q.VMClockNsec) {
					t.Errorf("snapshot %d: got %+v, qemu-img says %+v", i, sn, q)
				}
				if q.ICount == nil || sn.ICount != *q.ICount {
					t.Errorf("snapshot %d: icount %d, qemu-img %v", i, sn.ICount, q.ICount)
				}
				wantDisk := uint64(1 << 20)
				if i == 2 && c.compat != "0.10" {
					wantDisk = 3 << 20
				}
				if sn.DiskSize != wantDisk {
					t.Errorf("snapshot %d: disk size %d, want %d", i, sn.DiskSize, wantDisk)
				}
				if len(sn.ExtraData) < minSnapshotExtraDataV3 {
					t.Errorf("snapshot %d: %d bytes of extra data", i, len(sn.ExtraData))
				}
				checkSnapshotData(t, dir, img, s, h, sn)
			}
			if got := snapshotTableSize(h, snaps); got == 0 || got > 3*(snapshotFixedSize+1024+32) {
				t.Errorf("snapshot table size %d", got)
			}
			// findSnapshot on real entries: "1" is the first snapshot's ID and the third's name.
			for param, wantID := range map[string]string{"1": "1", "with,comma": "2", "snapshot.name=1": "3",
				"snapshot.id=2": "2", "snapshot.name=with,,comma": "2", "snapshot.id=3,snapshot.name=1": "3", "first": "1"} {
				sn, err := findSnapshot(snaps, param)
				if err != nil || sn.ID != wantID {
					t.Errorf("FindSnapshot(%q) = %q, %v; want ID %s", param, sn.ID, err, wantID)
				}
			}
		})
	}
}

// checkSnapshotData reads every uncompressed data cluster reachable from the snapshot's L1
// table and compares it with what qemu-img convert -l reads from that snapshot.
func checkSnapshotData(t *testing.T, dir, img string, s Storage, h *Header, sn Snapshot) {
	t.Helper()
	raw := filepath.Join(dir, "snap-"+sn.ID+".raw")
	qemuImg(t, "convert", "-l", "snapshot.id="+sn.ID, "-f", "qcow2", "-O", "raw", img, raw)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	// QEMU exports a snapshot at the image's current size, not at the snapshot's DiskSize
	// (qcow2_snapshot_load_tmp keeps the size), so only the part inside both is compared.
	if uint64(len(want)) != h.Size {
		t.Fatalf("snapshot %s: qemu-img exports %d bytes, the image is %d", sn.ID, len(want), h.Size)
	}
	g := h.Geometry()
	n := 0
	forEachL2Entry(t, s, h, sn.L1Offset, sn.L1Size, func(c guestCluster, e l2Entry) {
		if e.Compressed() || e.Zero() || e.Offset() == 0 || uint64(c.Offset(g)) >= min(sn.DiskSize, h.Size) {
			return
		}
		n++
		got := readFull(t, s, e.Offset(), g.ClusterSize())
		off := uint64(c.Offset(g))
		if !bytes.Equal(got, want[off:off+g.ClusterSize()]) {
			t.Fatalf("snapshot %s: guest cluster %d differs from qemu-img convert -l", sn.ID, c)
		}
	})
	if n == 0 {
		t.Fatalf("snapshot %s: no data clusters found", sn.ID)
	}
}

func TestFindSnapshot(t *testing.T) {
	snaps := []Snapshot{{ID: "1", Name: "base"}, {ID: "2", Name: "1"}, {ID: "3", Name: "a,b"}, {ID: "4", Name: "base"}}
	cases := []struct {
		param  string
		wantID string // "" = not found (ErrSnapshotNotFound); "!" = invalid parameter
	}{
		{"1", "1"},             // ID before name
		{"2", "2"},             // ID
		{"base", "1"},          // first by name
		{"a,b", "3"},           // a bare string is not split
		{"nope", ""},           //
		{"", ""},               // nothing has an empty ID or name
		{"snapshot.id=2", "2"}, //
		{"snapshot.name=1", "2"},
		{"snapshot.name=base,snapshot.id=4", "4"},
		{"snapshot.id=1,snapshot.name=1", ""}, // both must match one snapshot
		{"snapshot.name=a,,b", "3"},
		{"snapshot.name=a,b", "!"}, // "b" is not an option
		{"snapshot.foo=1", "!"},
		{"snapshot.id", "!"},
		{"snapshot.id=9", ""},
		{"snapshot.id=1,snapshot.id=2", "2"}, // the last value wins, as in QemuOpts
	}
	for _, c := range cases {
		sn, err := findSnapshot(snaps, c.param)
		switch c.wantID {
		case "":
			if !errors.Is(err, ErrSnapshotNotFound) {
				t.Errorf("FindSnapshot(%q) = %q, %v; want ErrSnapshotNotFound", c.param, sn.ID, err)
			}
		case "!":
			if err == nil || errors.Is(err, ErrSnapshotNotFound) {
				t.Errorf("FindSnapshot(%q) = %q, %v; want a parameter error", c.param, sn.ID, err)
			}
		default:
			if err != nil || sn.ID != c.wantID {
				t.Errorf("FindSnapshot(%q) = %q, %v; want %s", c.param, sn.ID, err, c.wantID)
			}
		}
	}
}

// snapImageStore loads a qemu-img image with snapshots into memory, with its header and the
// offset of its snapshot table.
func snapImageStore(t *testing.T, compat string) (*memstore.Store, *Header) {
	t.Helper()
	img := snapshotImage(t, t.TempDir(), compat, 65536)
	s := storeOf(t, img)
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	return s, h
}

func poke(t testing.TB, s Storage, off int64, v any) {
	t.Helper()
	b, err := binary.Append(nil, binary.BigEndian, v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestReadSnapshotsMalformed corrupts one field of a real snapshot table at a time and checks
// that each is refused with a *FormatError naming that field.
func TestReadSnapshotsMalformed(t *testing.T) {
	base, h := snapImageStore(t, "1.1")
	snaps, err := ReadSnapshots(base, h)
	if err != nil {
		t.Fatal(err)
	}
	fileSize, _ := base.Size()
	e0 := int64(snaps[0].EntryOffset)
	e1 := int64(snaps[1].EntryOffset)
	cases := []struct {
		name  string
		off   int64
		val   any
		field string // expected FormatError.Field; "" = must succeed; "*" = any field (the parse runs on into other bytes)
	}{
		{"extra 1024", e0 + 36, uint32(1024), "*"},
		{"extra 1025", e0 + 36, uint32(1025), "snapshot[0].extra_data_size"},
		{"extra 2^32-1", e0 + 36, uint32(1<<32 - 1), "snapshot[0].extra_data_size"},
		{"extra 15 on v3", e0 + 36, uint32(15), "snapshot[0].extra_data_size"},
		{"extra 0 on v3", e0 + 36, uint32(0), "snapshot[0].extra_data_size"},
		{"id length 65535", e0 + 12, uint16(65535), "*"},
		{"l1 size limit", e0 + 8, uint32(MaxL1Bytes / 8), "snapshot[0].l1_table_offset"}, // 32 MiB table runs past the file
		{"l1 size limit+1", e0 + 8, uint32(MaxL1Bytes/8 + 1), "snapshot[0].l1_size"},
		{"l1 size 2^32-1", e1 + 8, uint32(1<<32 - 1), "snapshot[1].l1_size"},
		{"l1 offset misaligned", e1, uint64(snaps[1].L1Offset) + 8, "snapshot[1].l1_table_offset"},
		{"l1 offset 0", e1, uint64(0), "snapshot[1].l1_table_offset"},
		{"l1 offset at EOF", e1, uint64(fileSize+65535) &^ 65535, "snapshot[1].l1_table_offset"},
		{"l1 offset 2^64-512", e1, uint64(1<<64 - 512), "snapshot[1].l1_table_offset"},
		{"l1 size 0, offset 0", e1 + 8, uint32(0), ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := base.Clone()
			poke(t, s, c.off, c.val)
			if c.name == "l1 size 0, offset 0" {
				poke(t, s, e1, uint64(0))
			}
			got, err := ReadSnapshots(s, h)
			if c.field == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if len(got) != 3 {
					t.Fatalf("%d snapshots", len(got))
				}
				return
			}
			var fe *FormatError
			if !errors.As(err, &fe) || !errors.Is(err, ErrFormat) {
				t.Fatalf("got %v, want a FormatError", err)
			}
			if c.field != "*" && fe.Field != c.field {
				t.Fatalf("error names %q, want %q: %v", fe.Field, c.field, err)
			}
		})
	}
}

// TestReadSnapshotsV2ShortExtra: a version 2 entry with less extra data is accepted and takes
// the disk size from the header, as QEMU does.
func TestReadSnapshotsV2ShortExtra(t *testing.T) {
	s, h := snapImageStore(t, "0.10")
	snaps, err := ReadSnapshots(s, h)
	if err != nil {
		t.Fatal(err)
	}
	e0 := int64(snaps[0].EntryOffset)
	// Rewrite entry 0 with 8 bytes of extra data: move id and name down by 16 bytes.
	tail := readFull(t, s, HostOffset(e0+snapshotFixedSize+24), uint64(len(snaps[0].ID)+len(snaps[0].Name)))
	poke(t, s, e0+36, uint32(8))
	poke(t, s, e0+snapshotFixedSize, uint64(777)) // vm_state_size_large
	if _, err := s.WriteAt(tail, e0+snapshotFixedSize+8); err != nil {
		t.Fatal(err)
	}
	// Entry 1 now starts 16 bytes earlier: move the rest of the table down.
	rest := readFull(t, s, snaps[1].EntryOffset, snapshotTableSize(h, snaps)-uint64(snaps[1].EntryOffset-h.SnapshotsOffset))
	if _, err := s.WriteAt(rest, int64(snaps[1].EntryOffset)-16); err != nil {
		t.Fatal(err)
	}
	got, err := ReadSnapshots(s, h)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].VMStateSize != 777 || got[0].DiskSize != h.Size || got[0].ICount != -1 || got[0].ID != "1" || got[0].Name != "first" {
		t.Fatalf("entry 0: %+v", got[0])
	}
	if got[1].ID != "2" || got[2].Name != "1" {
		t.Fatalf("later entries: %+v", got[1:])
	}
}

// TestReadSnapshotsTableLimits: the 64 MiB table cap and the end of the file bound the parse,
// and 65536 snapshots (the count limit) parse within the memory and time budget.
func TestReadSnapshotsTableLimits(t *testing.T) {
	const cs = 65536
	h := &Header{Version: 3, ClusterBits: 16, RefcountOrder: 4, Size: 1 << 30, SnapshotsOffset: cs}
	// entries returns a sparse store whose table holds n entries with the given id and name
	// lengths (the strings themselves are zeros, never written).
	entries := func(n int, idLen, nameLen uint16, fileSize int64) *memstore.Store {
		s := memstore.New()
		off := int64(cs)
		for i := 0; i < n; i++ {
			off = int64(pad8(uint64(off)))
			e := binary.BigEndian.AppendUint64(nil, 0)
			e = binary.BigEndian.AppendUint32(e, 0)
			e = binary.BigEndian.AppendUint16(e, idLen)
			e = binary.BigEndian.AppendUint16(e, nameLen)
			e = append(e, make([]byte, 20)...)
			e = binary.BigEndian.AppendUint32(e, 16)
			s.WriteAt(e, off)
			off += snapshotFixedSize + 16 + int64(idLen) + int64(nameLen)
		}
		s.Truncate(max(off, fileSize))
		return s
	}
	per := pad8(snapshotFixedSize + 16 + 65535 + 65535)
	fits := int(maxSnapshotTableBytes / per)
	t.Run("64 MiB cap", func(t *testing.T) {
		h := *h
		h.SnapshotCount = uint32(fits + 1)
		s := entries(fits+1, 65535, 65535, 0)
		_, err := ReadSnapshots(s, &h)
		var fe *FormatError
		if !errors.As(err, &fe) || !bytes.Contains([]byte(err.Error()), []byte("larger than")) {
			t.Fatalf("got %v, want the table size limit", err)
		}
		h.SnapshotCount = uint32(fits)
		if got, err := ReadSnapshots(s, &h); err != nil || len(got) != fits {
			t.Fatalf("%d entries that fit: %d, %v", fits, len(got), err)
		}
	})
	t.Run("end of file", func(t *testing.T) {
		h := *h
		h.SnapshotCount = 3
		s := entries(2, 1, 1, 0)
		if _, err := ReadSnapshots(s, &h); !errors.Is(err, ErrFormat) {
			t.Fatalf("third entry past the end of the file: %v", err)
		}
	})
	t.Run("65536 entries", func(t *testing.T) {
		h := *h
		h.SnapshotCount = maxSnapshots
		s := entries(maxSnapshots, 5, 7, 0)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		got, err := ReadSnapshots(s, &h)
		el := time.Since(start)
		runtime.ReadMemStats(&after)
		if err != nil || len(got) != maxSnapshots {
			t.Fatalf("%d, %v", len(got), err)
		}
		if a := after.TotalAlloc - before.TotalAlloc; a > 256<<20 || el > 30*time.Second { // time: a bound on a runaway, not a speed test
			t.Fatalf("65536 snapshots: %d MiB allocated in %v", a>>20, el)
		}
		h.SnapshotCount = maxSnapshots + 1
		if _, err := ReadSnapshots(s, &h); !errors.Is(err, ErrFormat) {
			t.Fatalf("65537 snapshots: %v", err)
		}
	})
}
