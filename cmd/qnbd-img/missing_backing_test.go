// A backing file that is missing: every command that opens the chain fails as qemu-img's.
package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMissingBackingFileMatchesQemu: with the base of a two- and a three-image chain deleted,
// each command says "Could not open backing file: " once per level down to the missing
// file, named as QEMU combines it with the names above it (relative to the directory of the
// image naming it, as the user wrote the top image's name), with qemu-img's exit code.
func TestMissingBackingFileMatchesQemu(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sub := filepath.Join(dir, "d")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	sh(t, sub, "qemu-img", "create", "-q", "-f", "qcow2", "b.qcow2", "1M")
	sh(t, sub, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", "t.qcow2")
	sh(t, sub, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "t.qcow2", "-F", "qcow2", "u.qcow2")
	if err := os.Remove(filepath.Join(sub, "b.qcow2")); err != nil {
		t.Fatal(err)
	}
	for _, img := range []string{"d/t.qcow2", "d/u.qcow2", filepath.Join(sub, "u.qcow2")} {
		for _, cmd := range [][]string{
			{"check"}, {"map"}, {"compare", img}, {"convert", "-O", "raw"},
			{"amend", "-o", "lazy_refcounts=on"}, {"resize"}, {"snapshot", "-l"}, {"measure", "-O", "qcow2"},
		} {
			args := append(append([]string{}, cmd...), img)
			switch cmd[0] {
			case "convert":
				args = append(args, "out.raw")
			case "resize":
				args = append(args, "2M")
			}
			same(t, dir, args...)
		}
	}
}
