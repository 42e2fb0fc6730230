// Persistent bitmaps kept across qnbd's writes, against QEMU doing the same writes: both
// images end with the same bitmaps, flags and dirty maps as QEMU reads them.
package qcow2

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// qemuBitmaps is the bitmap list of qemu-img info --output=json (-U: the image may be open).
func qemuBitmaps(t *testing.T, path string) []any {
	t.Helper()
	out := engQemu(t, "qemu-img", "info", "-U", "--output=json", path)
	var info struct {
		FormatSpecific struct {
			Data struct {
				Bitmaps []any `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return info.FormatSpecific.Data.Bitmaps
}

// qemuDirtyMap is nbdinfo --map of qemu:dirty-bitmap:name as qemu-nbd -r -B name serves it.
func qemuDirtyMap(t *testing.T, path, name string) string {
	t.Helper()
	return engQemu(t, "nbdinfo", "--map=qemu:dirty-bitmap:"+name, "--", "[", "qemu-nbd", "-r", "-B", name, "-f", "qcow2", path, "]")
}

// ourDirtyMap is the same map from an open image's loaded bitmap, in nbdinfo's layout.
func ourDirtyMap(t *testing.T, img *Image, name string) string {
	t.Helper()
	ext, err := img.BitmapExtents(name, 0, img.Size())
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	off := uint64(0)
	for _, e := range ext {
		typ, desc := 0, "clean"
		if e.Dirty {
			typ, desc = 1, "dirty"
		}
		b.WriteString(strings.Join([]string{pad(off, 10), pad(e.Length, 12), pad(uint64(typ), 5)}, "") + "  " + desc + "\n")
		off += e.Length
	}
	return b.String()
}

func pad(v uint64, w int) string {
	s := strconv.FormatUint(v, 10)
	return strings.Repeat(" ", max(0, w-len(s))) + s
}

// bitmapOp is one guest request, run through qemu-io on one image and the engine on the other.
type bitmapOp struct {
	kind   string // write, zero, discard
	off, n uint64
}

func (o bitmapOp) qemuIO() string {
	a := strconv.FormatUint(o.off, 10) + " " + strconv.FormatUint(o.n, 10)
	switch o.kind {
	case "zero":
		return "write -z " + a
	case "discard":
		return "discard " + a
	}
	return "write -P 7 " + a
}

func (o bitmapOp) run(t *testing.T, img *Image) {
	t.Helper()
	var err error
	switch o.kind {
	case "zero":
		err = img.Zero(GuestOffset(o.off), o.n, 0)
	case "discard":
		err = img.Discard(GuestOffset(o.off), o.n)
	default:
		_, err = img.WriteAt(bytes.Repeat([]byte{7}, int(o.n)), int64(o.off))
	}
	if err != nil {
		t.Fatalf("%s %d+%d: %v", o.kind, o.off, o.n, err)
	}
}

// bitmapImage makes a 4 MiB image with QEMU's bitmaps b0 (64 KiB, enabled), b1 (128 KiB,
// disabled) and b2 (512 bytes, enabled), and one write by qemu-io that dirties b0 and b2.
func bitmapImage(t *testing.T, dir string) string {
	t.Helper()
	p := engCreate(t, dir, "b.qcow2", "", "4M")
	engQemu(t, "qemu-img", "bitmap", "--add", p, "b0")
	engQemu(t, "qemu-img", "bitmap", "--add", "-g", "128k", "--disable", p, "b1")
	engQemu(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b2")
	engQemu(t, "qemu-io", "-c", "write -P 9 1M 64k", p)
	return p
}

// TestBitmapsKeptAndExtendedLikeQemu: bitmaps QEMU made and dirtied are loaded at our
// read-write open (marked in-use on disk at once, as QEMU marks them), extended by our
// writes, zeroes and discards exactly as QEMU extends them, and stored at close: qemu-img
// check exits 0 (no leak, also after a second session frees the first one's tables), qemu-img
// info lists the same bitmaps and flags, and qemu-nbd -B serves the same dirty maps from both
// images. The disabled bitmap does not change.
func TestBitmapsKeptAndExtendedLikeQemu(t *testing.T) {
	dir := t.TempDir()
	p := bitmapImage(t, dir)
	ours, theirs := filepath.Join(dir, "ours.qcow2"), filepath.Join(dir, "theirs.qcow2")
	engQemu(t, "cp", p, ours)
	engQemu(t, "cp", p, theirs)
	sessions := [][]bitmapOp{
		{{"write", 0, 4096}, {"zero", 2*mib + 512, 100 * kib}, {"discard", 3 * mib, 64 * kib}, {"write", 4*mib - 1024, 1024}, {"write", 1536 * kib, 512}},
		{{"write", 777 * kib, 3000}, {"zero", 200 * kib, 1}, {"discard", 3*mib + 100, 5}},
	}
	for i, ops := range sessions {
		img, err := Open(ours, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range qemuBitmaps(t, ours) {
			if !strings.Contains(strings.Join(flagsOf(b), ","), "in-use") {
				t.Errorf("session %d: bitmap %v not in-use on disk while open", i, b)
			}
		}
		args := []string{}
		for _, o := range ops {
			o.run(t, img)
			args = append(args, "-c", o.qemuIO())
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		engQemu(t, "qemu-io", append(args, theirs)...)
		if q := corpus.QemuCheck(t, ours, corpus.CheckOptions{}); !q.Clean() {
			t.Errorf("session %d: qemu-img check %v", i, q)
		}
		if a, b := qemuBitmaps(t, ours), qemuBitmaps(t, theirs); !reflect.DeepEqual(a, b) || len(a) != 3 {
			t.Errorf("session %d: bitmaps:\n ours %v\n QEMU %v", i, a, b)
		}
		for _, name := range []string{"b0", "b1", "b2"} {
			a, b := qemuDirtyMap(t, ours, name), qemuDirtyMap(t, theirs, name)
			if a != b {
				t.Errorf("session %d: dirty map of %s:\n ours\n%s QEMU\n%s", i, name, a, b)
			}
			if name == "b1" && strings.Contains(a, "dirty") {
				t.Errorf("the disabled bitmap b1 got dirty:\n%s", a)
			}
		}
	}
	// Our own load reads what QEMU reads.
	img, err := Open(ours, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	for _, name := range []string{"b0", "b2"} {
		if a, b := ourDirtyMap(t, img, name), qemuDirtyMap(t, theirs, name); a != b {
			t.Errorf("loaded %s:\n ours\n%s QEMU\n%s", name, a, b)
		}
	}
}

func flagsOf(b any) []string {
	m, _ := b.(map[string]any)
	fl, _ := m["flags"].([]any)
	var out []string
	for _, f := range fl {
		s, _ := f.(string)
		out = append(out, s)
	}
	return out
}

// TestBitmapsInUseStayInUse: a bitmap QEMU left in-use (its writer was killed) is neither
// loaded nor stored: after our session it is still in-use, as QEMU keeps it, while the
// consistent one next to it is stored clean; qemu-img check exits 0 and says nothing of it.
func TestBitmapsInUseStayInUse(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "b.qcow2", "", "4M")
	engQemu(t, "qemu-img", "bitmap", "--add", p, "bad")
	out, _ := exec.Command("qemu-io", "-c", "write -P 1 0 4k", "-c", "sigraise 9", p).CombinedOutput()
	if !strings.Contains(string(out), "wrote 4096/4096") {
		t.Fatalf("qemu-io: %s", out)
	}
	engQemu(t, "qemu-img", "bitmap", "--add", p, "good")
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := img.Bitmaps()
	if len(got) != 2 || !got[0].InUse || got[0].Loaded || got[1].InUse || !got[1].Loaded {
		t.Errorf("bitmaps at open: %+v", got)
	}
	engWrite(t, img, 64*kib, make([]byte, 4096))
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	want := []any{
		map[string]any{"name": "bad", "granularity": 65536.0, "flags": []any{"in-use", "auto"}},
		map[string]any{"name": "good", "granularity": 65536.0, "flags": []any{"auto"}},
	}
	if got := qemuBitmaps(t, p); !reflect.DeepEqual(got, want) {
		t.Errorf("bitmaps after close: %v, want %v", got, want)
	}
	corpus.RequireClean(t, p)
	if m := qemuDirtyMap(t, p, "good"); !strings.Contains(m, "     65536       65536    1  dirty") {
		t.Errorf("good's map:\n%s", m)
	}
}

// TestBitmapMemoryLimit: a read-write open whose bitmaps need more memory than the limit is
// refused with errBitmapMemory before anything is written; at the limit it opens.
func TestBitmapMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	p := bitmapImage(t, dir)
	before, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	// 4 MiB: b0 64 granules (8 bytes), b1 32 (8 bytes), b2 8192 (1024 bytes).
	const need = 8 + 8 + 1024
	_, err = Open(p, OpenOptions{BitmapMemoryLimit: need - 1})
	if !errors.Is(err, errBitmapMemory) || !strings.Contains(err.Error(), "1040 bytes") {
		t.Fatalf("open over the limit: %v", err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Error("the refused open changed the image")
	}
	img, err := Open(p, OpenOptions{BitmapMemoryLimit: need})
	if err != nil {
		t.Fatal(err)
	}
	total := uint64(0)
	for _, b := range img.Bitmaps() {
		total += b.MemoryBytes
	}
	if total != need {
		t.Errorf("memory: %d, want %d", total, need)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}
