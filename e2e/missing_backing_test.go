package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestMissingImageRefusedLikeQemuNbd: an image that does not exist, and chains whose base
// was deleted, stop both servers before they serve, with qemu-nbd's message ("Could not
// open backing file: " once per level, the missing file named as QEMU names it) and exit
// code.
func TestMissingImageRefusedLikeQemuNbd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("qemu-img", args...)
		cmd.Dir = dir // relative backing names in the headers
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("qemu-img %q: %v\n%s", args, err, out)
		}
	}
	run("create", "-q", "-f", "qcow2", "b.qcow2", "1M")
	run("create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "t.qcow2")
	run("create", "-q", "-f", "qcow2", "-b", "t.qcow2", "-F", "qcow2", "u.qcow2")
	if err := os.Remove(filepath.Join(dir, "b.qcow2")); err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{"missing.qcow2", "t.qcow2", "u.qcow2"} {
		for _, extra := range [][]string{{"-r", "-f", "qcow2"}, nil} {
			sock := filepath.Join(shortTempDir(t), "nbd.sock")
			args := append(append([]string{"-k", sock}, extra...), filepath.Join(dir, img))
			refusedLikeQemuNbd(t, "Could not open", args...)
		}
	}
}
