// Serving an image whose persistent bitmaps cannot be trusted (a version 3 header with the
// bitmaps extension but not its autoclear bit): qnbd prints qemu-nbd's open-time warning and
// hint line (docs/bitmaps.md), then serves the image.
package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIgnoredBitmapsWarningMatchesQemuNBD(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "b.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	run(t, "qemu-img", "bitmap", "--add", img, "b0")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	b[95] = 0 // the autoclear bits, bitmaps included
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var outs []string
	for _, bin := range serverBins {
		s := bin.start(t, serverConfig{Args: []string{"-r", "-f", "qcow2", img}})
		h := connect(t, s, "", nil)
		if size, err := h.GetSize(); err != nil || size != 1<<20 {
			t.Errorf("%s: size %d, %v", bin.name, size, err)
		}
		outs = append(outs, strings.ReplaceAll(serverStderr(s), bin.name+": ", "PROG: "))
	}
	want := "PROG: warning: a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent\n" +
		"Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix."
	if outs[1] != want {
		t.Fatalf("qemu-nbd printed %q, want %q", outs[1], want)
	}
	if outs[0] != outs[1] {
		t.Errorf("qnbd printed %q, qemu-nbd %q", outs[0], outs[1])
	}
}
