// The warning qemu-img 7.2 prints at every open of an image whose persistent bitmaps cannot
// be trusted (a version 2 header with a bitmaps extension, or a version 3 one whose autoclear
// bit is off), followed by a hint line without a newline: qnbd-img prints the same.
package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIgnoredBitmapsWarnAsQemu(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	sh(t, src, "qemu-img", "create", "-q", "-f", "qcow2", "v3.qcow2", "8M")
	sh(t, src, "qemu-img", "bitmap", "--add", "v3.qcow2", "b0")
	qemuIO(t, src, "v3.qcow2", "write -P 1 0 64k")
	b, err := os.ReadFile(filepath.Join(src, "v3.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	write(t, src, "v2.qcow2", b)
	sh(t, src, "qemu-img", "amend", "-o", "compat=0.10", "v2.qcow2")
	b[95] = 0 // autoclear features: the bitmaps bit off
	write(t, src, "v3.qcow2", b)
	for _, c := range []string{
		"info v2.qcow2", "info v3.qcow2", "check v2.qcow2", "check v3.qcow2", "map v3.qcow2",
		"compare v3.qcow2 v3.qcow2", "amend -o lazy_refcounts=off v3.qcow2", "resize v2.qcow2 +1M",
	} {
		t.Run(c, func(t *testing.T) {
			t.Parallel()
			args := strings.Fields(c)
			qdir, odir := isolated(t, src, "v2.qcow2", "v3.qcow2"), isolated(t, src, "v2.qcow2", "v3.qcow2")
			want, got := qemu(t, qdir, args...), ours(t, odir, args...)
			got.stderr = strings.ReplaceAll(got.stderr, "qnbd-img:", "qemu-img:")
			if want.stderr != got.stderr || want.code != got.code {
				t.Errorf("%s:\nqemu-img: %v\nqnbd-img: %v", c, want, got)
			}
			if !strings.Contains(want.stderr, "bitmaps") {
				t.Errorf("%s: qemu-img gave no warning: %v", c, want)
			}
		})
	}
}
