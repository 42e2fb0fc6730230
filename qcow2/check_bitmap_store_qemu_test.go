// The images a repair leaves, against qemu-img check -r's on copies of the same damaged image:
// qemu-img check -r stores the bitmaps again at close, and so must Check.
package qcow2

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// bmCompareAfterRepair compares ours (repaired by Check) with theirs (by qemu-img check -r):
// qemu-img check's verdict, the bitmap list qemu-img info shows (names, granularities, flags)
// and each consistent bitmap's dirty bits. A repair that failed (qemu-img check exit 1) is
// the deliberate difference: QEMU still stores the bitmaps at close, into refcounts the check
// could not vouch for, and the engine stores nothing, so ours must keep orig's bitmaps.
func bmCompareAfterRepair(t *testing.T, mode RepairMode, orig, ours, theirs string, failed bool) {
	t.Helper()
	if failed {
		if a, b := bmState(t, ours), bmState(t, orig); a != b {
			t.Errorf("-r %v failed, but the bitmaps changed\nafter:\n%s\nbefore:\n%s", mode, a, b)
		}
		return
	}
	if a, b := corpus.QemuCheck(t, ours, corpus.CheckOptions{}), corpus.QemuCheck(t, theirs, corpus.CheckOptions{}); a.ExitCode != b.ExitCode {
		t.Errorf("-r %v: qemu-img check afterwards: ours %d, theirs %d\nours: %s\ntheirs: %s", mode, a.ExitCode, b.ExitCode, a.Stderr, b.Stderr)
	}
	if a, b := bmState(t, ours), bmState(t, theirs); a != b {
		t.Errorf("-r %v: bitmaps afterwards differ\nours:\n%s\ntheirs:\n%s", mode, a, b)
	}
}

// bmState describes the bitmaps of the image at path: qemu-img info's list, then the dirty map
// of every consistent one as the engine reads it.
func bmState(t *testing.T, path string) string {
	t.Helper()
	js, err := json.Marshal(qemuBitmaps(t, path))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.Write(js)
	b.WriteString("\n")
	img, err := Open(path, OpenOptions{ReadOnly: true, ReadBitmaps: true, NoBacking: true})
	if err != nil {
		return b.String() + "open: " + err.Error()
	}
	defer img.Close()
	for _, bm := range img.Bitmaps() {
		if bm.Loaded {
			b.WriteString(bm.Name + ":\n" + ourDirtyMap(t, img, bm.Name))
		}
	}
	return b.String()
}

// TestRepairStoresBitmapsLikeQemu: after a repair of an image whose bitmaps are sound, the
// bitmaps were stored again as qemu-img check -r stores them: new tables and directory, the
// old clusters freed (qemu-img check is clean), and the same dirty bits, which qemu-nbd -B
// serves alike from both images.
func TestRepairStoresBitmapsLikeQemu(t *testing.T) {
	t.Parallel()
	base, l := bmBaseImage(t)
	dir := t.TempDir()
	orig := writeTemp(t, dir, "orig.qcow2", base)
	for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
		ours := ccCopy(t, orig, dir, "ours-"+mode.String()+".qcow2")
		theirs := ccCopy(t, orig, dir, "theirs-"+mode.String()+".qcow2")
		q := corpus.QemuCheck(t, theirs, corpus.CheckOptions{Repair: mode.String()})
		res, err := Check(ours, mode)
		if err != nil || !res.Clean() || q.ExitCode != 0 || len(res.CloseMessages) != 0 {
			t.Fatalf("-r %v: %v %+v; qemu-img: %v", mode, err, res, q)
		}
		m := ccOpenImg(t, ours)
		if dirAt := m.u64(l.ext + 16); dirAt == l.dir {
			t.Errorf("-r %v: the bitmap directory is still at %#x: the bitmaps were not stored", mode, dirAt)
		}
		corpus.RequireClean(t, ours)
		bmCompareAfterRepair(t, mode, orig, ours, theirs, false)
		if a, b := qemuDirtyMap(t, ours, "b1"), qemuDirtyMap(t, theirs, "b1"); a != b || !strings.Contains(a, "dirty") {
			t.Errorf("-r %v: qemu-nbd -B b1 serves\nours:\n%s\ntheirs:\n%s", mode, a, b)
		}
	}
}

// TestRepairLeavesInUseBitmapsLikeQemu: when every bitmap is in-use, qemu-img check -r has
// nothing to store and leaves the directory where it was; so must Check.
func TestRepairLeavesInUseBitmapsLikeQemu(t *testing.T) {
	t.Parallel()
	base, l := bmBaseImage(t)
	dir := t.TempDir()
	orig := writeTemp(t, dir, "orig.qcow2", base)
	m := ccOpenImg(t, orig)
	for _, e := range l.entry {
		m.write(e+bitmapEntFlags, []byte{0, 0, 0, byte(bitmapFlagInUse | bitmapFlagAuto)})
	}
	ours, theirs := ccCopy(t, orig, dir, "ours.qcow2"), ccCopy(t, orig, dir, "theirs.qcow2")
	q := corpus.QemuCheck(t, theirs, corpus.CheckOptions{Repair: "leaks"})
	res, err := Check(ours, RepairLeaks)
	if err != nil || !res.Clean() || q.ExitCode != 0 {
		t.Fatalf("%v %+v; qemu-img: %v", err, res, q)
	}
	for _, p := range []string{ours, theirs} {
		if at := ccOpenImg(t, p).u64(l.ext + 16); at != l.dir {
			t.Errorf("%s: the bitmap directory moved from %#x to %#x", filepath.Base(p), l.dir, at)
		}
	}
	bmCompareAfterRepair(t, RepairLeaks, orig, ours, theirs, false)
}
