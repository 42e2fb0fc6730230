// qnbd-img amend -o compat=0.10 on an image with persistent bitmaps, against qemu-img 7.2:
// the amendment succeeds silently; the bitmaps are stored at close into the version 2 header,
// which has no autoclear bit, so every later open finds them inconsistent (QEMU's warning) and
// check counts their clusters as leaks. Both tools' results must check and read the same.
package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAmendDowngradeWithBitmapsMatchesQemu(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "src.qcow2", "8M")
	qemuIO(t, dir, "src.qcow2", "write -P 1 0 1M")
	sh(t, dir, "qemu-img", "bitmap", "--add", "src.qcow2", "b0")
	sh(t, dir, "qemu-img", "bitmap", "--add", "-g", "512", "--disable", "src.qcow2", "b1")
	qemuIO(t, dir, "src.qcow2", "write -P 2 0 64k", "write -P 3 3M 4k")
	b, err := os.ReadFile(filepath.Join(dir, "src.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, dir, "q.qcow2", b)
	write(t, dir, "o.qcow2", b)
	want := qemu(t, dir, "amend", "-o", "compat=0.10", "q.qcow2")
	got := ours(t, dir, "amend", "-o", "compat=0.10", "o.qcow2")
	if got != want {
		t.Errorf("amend:\nqemu-img: %v\nqnbd-img: %v", want, got)
	}
	if r := qemu(t, dir, "compare", "q.qcow2", "o.qcow2"); r.code != 0 {
		t.Errorf("the images read differently: %v", r)
	}
	// The check output names clusters: the same leaks (the old and new bitmap clusters).
	wc, gc := qemu(t, dir, "check", "q.qcow2"), qemu(t, dir, "check", "o.qcow2")
	if wc.code != gc.code || wc.stderr != gc.stderr || wc.stdout != strings.ReplaceAll(gc.stdout, "o.qcow2", "q.qcow2") {
		t.Errorf("check after amend:\nqemu-img's image: %v\nqnbd-img's image: %v", wc, gc)
	}
	if wi, gi := qemu(t, dir, "info", "q.qcow2"), qemu(t, dir, "info", "o.qcow2"); infoBody(wi.stdout) != infoBody(gi.stdout) || wi.stderr != gi.stderr {
		t.Errorf("info after amend:\n%v\nvs\n%v", wi, gi)
	}
}
