package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// TestCheckBitmapsAutoclearClearLikeQemu: an image whose bitmaps autoclear bit a program
// without bitmap support cleared (version 3 and version 2): qnbd-img check, --output=json, -q
// and -r leaks print what qemu-img prints (the warning, its hint without a newline, the
// bitmaps' clusters as leaks) and exit as it does.
func TestCheckBitmapsAutoclearClearLikeQemu(t *testing.T) {
	t.Parallel()
	for _, compat := range []string{"1.1", "0.10"} {
		t.Run(compat, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "a.qcow2")
			sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat="+compat, img, "64M")
			if compat == "1.1" {
				sh(t, dir, "qemu-img", "bitmap", "--add", img, "b0")
				sh(t, dir, "qemu-io", "-c", "write 0 1M", img)
			} else {
				// qemu-img bitmap refuses version 2: take the extension of a version 3 image.
				v3 := filepath.Join(dir, "v3.qcow2")
				sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", v3, "64M")
				sh(t, dir, "qemu-img", "bitmap", "--add", v3, "b0")
				sh(t, dir, "qemu-img", "amend", "-o", "compat=0.10", v3)
				img = v3
			}
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			if compat == "1.1" {
				binary.BigEndian.PutUint64(b[88:], 0) // autoclear features
			}
			write(t, dir, "img.qcow2", b)
			for _, args := range [][]string{{"check"}, {"check", "--output=json"}, {"check", "-q"}, {"check", "-r", "leaks"}} {
				want, got := onCopies(t, dir, filepath.Join(dir, "img.qcow2"), args...)
				if want != got {
					t.Errorf("%q:\nqemu-img: %v\nqnbd-img: %v", args, want, got)
				}
			}
		})
	}
}
