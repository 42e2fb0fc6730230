// Open against QEMU: snapshot export size (qemu-nbd -l), damaged snapshot tables QEMU still
// opens, and an external data file without a name.
package qcow2

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// qemuNBDSize serves img with qemu-nbd (extra arguments added) on a Unix socket and returns
// the export size nbdinfo reports.
func qemuNBDSize(t *testing.T, img string, extra ...string) uint64 {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	args := append([]string{"-r", "-t", "-k", sock, "-f", "qcow2"}, extra...)
	cmd := exec.Command("qemu-nbd", append(args, img)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		out, err := exec.CommandContext(ctx, "nbdinfo", "--size", "nbd+unix:///?socket="+sock).Output()
		if err == nil {
			n, perr := strconv.ParseUint(strings.TrimSpace(string(out)), 10, 64)
			if perr != nil {
				t.Fatalf("nbdinfo --size: %q", out)
			}
			return n
		}
		if ctx.Err() != nil {
			t.Fatalf("qemu-nbd %v did not serve: %s", args, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSnapshotExportSizeMatchesQemuNBD: qemu-nbd -l exports a snapshot at the image's current
// virtual size (qcow2_snapshot_load_tmp keeps it), not at the snapshot's disk size; the bytes
// past the snapshot's L1 table read as zeros.
func TestSnapshotExportSizeMatchesQemuNBD(t *testing.T) {
	dir := t.TempDir()
	// 512-byte clusters: the first snapshot's L1 table (1 MiB) is shorter than the image's.
	img := snapshotImage(t, dir, "1.1", 512)
	s, err := OpenFile(img, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err := LoadSnapshots(s, h)
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	differ := 0
	for _, sn := range snaps {
		if sn.DiskSize != h.Size {
			differ++
		}
		want := qemuNBDSize(t, img, "-l", "snapshot.id="+sn.ID)
		im, err := Open(img, OpenOptions{Snapshot: "snapshot.id=" + sn.ID})
		if err != nil {
			t.Fatalf("open snapshot %s: %v", sn.ID, err)
		}
		if im.Size() != want {
			t.Errorf("snapshot %s (disk size %d): size %d, qemu-nbd -l exports %d", sn.ID, sn.DiskSize, im.Size(), want)
		}
		got := engReadAll(t, im)
		im.Close()
		ref := engConvertRaw(t, img, "-l", "snapshot.id="+sn.ID)
		if d := engFirstDiff(got, ref); d != "" {
			t.Errorf("snapshot %s: contents differ from qemu-img convert -l: %s", sn.ID, d)
		}
	}
	if differ == 0 {
		t.Fatal("no snapshot has a disk size other than the image's: the test proves nothing")
	}
}

// snapshotPoke is one damage to an image's snapshot table or header.
type snapshotPoke struct {
	name   string
	compat string
	off    func(snapTable int64) int64 // where, given the table's offset
	width  int
	val    uint64
}

func snapshotPokes() []snapshotPoke {
	at := func(rel int64) func(int64) int64 { return func(st int64) int64 { return st + rel } }
	fixed := func(abs int64) func(int64) int64 { return func(int64) int64 { return abs } }
	return []snapshotPoke{
		{"l1-unaligned", "1.1", at(0), 8, 0x50001},
		{"l1-past-eof", "1.1", at(0), 8, 0x7000000},
		{"l1-too-large", "1.1", at(8), 4, 0x10000000},
		{"l1-longer", "1.1", at(8), 4, 0x1000},
		{"extra-too-large", "1.1", at(36), 4, 2000},
		{"extra-short-v3", "1.1", at(36), 4, 8},
		{"extra-short-v2", "0.10", at(36), 4, 8},
		{"id-long", "1.1", at(12), 2, 60000},
		{"count-past-table", "1.1", fixed(offNbSnapshots), 4, 2},
		{"count-too-large", "1.1", fixed(offNbSnapshots), 4, 70000},
		{"table-past-eof", "1.1", fixed(offSnapshotsOffset), 8, 0x7000000},
		{"table-at-header", "1.1", fixed(offSnapshotsOffset), 8, 0},
		{"table-unaligned", "1.1", fixed(offSnapshotsOffset), 8, 0x1000},
	}
}

// runOK runs a command and reports whether it exited 0, with its output.
func runOK(name string, args ...string) (bool, string) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return err == nil, string(out)
}

// TestOpenDamagedSnapshotTableLikeQemu: an image whose snapshot table QEMU still opens opens
// here too (read-only and read-write), reads the same, and a write behaves as QEMU's (a write
// onto what the table says is a snapshot's L1 table marks the image corrupt in both); loading
// the snapshot succeeds or fails as qemu-img convert -l does; what QEMU refuses, Open refuses.
func TestOpenDamagedSnapshotTableLikeQemu(t *testing.T) {
	for _, p := range snapshotPokes() {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := engCreate(t, dir, "b.qcow2", "compat="+p.compat, "1M")
			engQemu(t, "qemu-io", "-c", "write -P 1 0 64k", img)
			engQemu(t, "qemu-img", "snapshot", "-c", "s1", img)
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			st := int64(binary.BigEndian.Uint64(b[offSnapshotsOffset:]))
			v := make([]byte, 8)
			binary.BigEndian.PutUint64(v, p.val)
			copy(b[p.off(st):], v[8-p.width:])
			compareDamagedSnapshotOpen(t, dir, b)
		})
	}
}

// compareDamagedSnapshotOpen writes b (an image with a damaged snapshot table whose snapshot
// s1 holds 0x01 in its first 64 KiB, as does the active state) twice into dir and compares
// the engine with QEMU on the copies: read-only open and read (qemu-io -r), loading s1
// (qemu-img convert -l), a read-write open and write (qemu-io), then the corrupt flag and the
// contents after the write.
func compareDamagedSnapshotOpen(t *testing.T, dir string, b []byte) {
	t.Helper()
	for _, name := range []string{"ours.qcow2", "theirs.qcow2"} {
		if err := writeSparse(filepath.Join(dir, name), b); err != nil {
			t.Fatal(err)
		}
	}
	ours, theirs := filepath.Join(dir, "ours.qcow2"), filepath.Join(dir, "theirs.qcow2")

	// Read-only open and read.
	qok, qout := runOK("qemu-io", "-r", "-f", "qcow2", "-c", "read -P 1 0 64k", theirs)
	qok = qok && !strings.Contains(qout, "fail")
	im, err := Open(ours, OpenOptions{ReadOnly: true})
	if (err == nil) != qok {
		t.Fatalf("read-only open: ours %v, qemu-io: %s", err, qout)
	}
	if err != nil {
		if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) {
			t.Errorf("refusal is not a format error: %v", err)
		}
		return
	}
	buf := make([]byte, 64<<10)
	if _, err := im.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, bytes.Repeat([]byte{1}, len(buf))) {
		t.Errorf("read: %v", err)
	}
	im.Close()

	// Loading the snapshot.
	qok, qout = runOK("qemu-img", "convert", "-l", "s1", "-O", "raw", theirs, filepath.Join(dir, "s1.raw"))
	im, err = Open(ours, OpenOptions{Snapshot: "s1"})
	if (err == nil) != qok {
		t.Errorf("snapshot open: ours %v, qemu-img convert -l: %s", err, qout)
	}
	if err == nil {
		got := engReadAll(t, im)
		im.Close()
		want, rerr := os.ReadFile(filepath.Join(dir, "s1.raw"))
		if rerr != nil {
			t.Fatal(rerr)
		}
		if d := engFirstDiff(got, want); d != "" {
			t.Errorf("snapshot contents differ from qemu-img convert -l: %s", d)
		}
	}

	// A write, then what qemu-img info says about the image.
	qok, qout = runOK("qemu-io", "-f", "qcow2", "-c", "write -P 2 64k 64k", theirs)
	qok = qok && !strings.Contains(qout, "fail") && !strings.Contains(qout, "error")
	im, err = Open(ours, OpenOptions{})
	if err != nil {
		t.Fatalf("read-write open: %v", err)
	}
	_, werr := im.WriteAt(bytes.Repeat([]byte{2}, 64<<10), 64<<10)
	im.Close()
	if (werr == nil) != qok {
		t.Errorf("write: ours %v, qemu-io: %s", werr, qout)
	}
	corrupt := func(path string) string {
		out := engQemu(t, "qemu-img", "info", "--output=json", "-U", path)
		return fmt.Sprint(strings.Contains(out, `"corrupt": true`))
	}
	if a, b := corrupt(ours), corrupt(theirs); a != b {
		t.Errorf("corrupt after the write: ours %s, QEMU %s", a, b)
	}
	if werr == nil {
		if d := engFirstDiff(engConvertRaw(t, ours), engConvertRaw(t, theirs)); d != "" {
			t.Errorf("contents after the write differ: %s", d)
		}
	}
}

// TestOpenDataFileWithoutName: the external data file bit without a name in the header (and
// none given) fails the open with QEMU's reason, as qemu-io fails it.
func TestOpenDataFileWithoutName(t *testing.T) {
	dir := t.TempDir()
	img := engCreate(t, dir, "d.qcow2", "data_file="+filepath.Join(dir, "d.data"), "1M")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	// Turn the data file name extension into an unknown one.
	found := false
	for pos := uint64(headerV3Length); pos+8 <= uint64(len(b)); {
		typ, n := binary.BigEndian.Uint32(b[pos:]), binary.BigEndian.Uint32(b[pos+4:])
		if typ == 0 {
			break
		}
		if typ == extDataFile {
			binary.BigEndian.PutUint32(b[pos:], 0x7a7a7a7a)
			found = true
			break
		}
		pos += 8 + pad8(uint64(n))
	}
	if !found {
		t.Fatal("no data file name extension")
	}
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	qok, qout := runOK("qemu-io", "-r", "-f", "qcow2", "-c", "read 0 512", img)
	if qok || !strings.Contains(qout, "'data-file' is required") {
		t.Fatalf("qemu-io opened it or said something else: %s", qout)
	}
	for _, ro := range []bool{true, false} {
		_, err := Open(img, OpenOptions{ReadOnly: ro})
		var fe *FormatError
		if err == nil || !errors.Is(err, ErrFormat) || !errors.As(err, &fe) || fe.Field != "incompatible_features" ||
			!strings.Contains(err.Error(), "'data-file' is required") {
			t.Errorf("read-only %v: open: %v, want a *FormatError on incompatible_features saying 'data-file' is required", ro, err)
		}
	}
	// Naming it opens the image.
	im, err := Open(img, OpenOptions{ReadOnly: true, DataFile: filepath.Join(dir, "d.data")})
	if err != nil {
		t.Fatalf("open with DataFile: %v", err)
	}
	im.Close()
}
