// commit, rebase and convert -n mark the enabled persistent bitmaps of the images they write,
// as qemu-img 7.2 does: each bitmap of each image, served with qemu-nbd -r -B and read with
// nbdinfo --map=qemu:dirty-bitmap:NAME, must match qemu-img's result for the same command.
package main

import (
	"strings"
	"testing"
)

// bitmapChain makes, in dir: base.qcow2 (data everywhere; an enabled bitmap bb with 512-byte
// granules), mid.qcow2 over it (one sector; enabled mb), top.qcow2 over mid (enabled tb added
// before the writes, so that it starts clean), nb.qcow2 (a new backing file that differs from
// the chain in places), src.raw and tgt.qcow2 (enabled gb, and a disabled gd that must stay
// clean) for convert -n.
func bitmapChain(t *testing.T, dir string) []string {
	t.Helper()
	q := func(args ...string) { sh(t, dir, "qemu-img", args...) }
	io := func(img string, cmds ...string) { qemuIO(t, dir, img, cmds...) }
	q("create", "-q", "-f", "qcow2", "base.qcow2", "4M")
	io("base.qcow2", "write -P 1 0 4M")
	q("bitmap", "--add", "-g", "512", "base.qcow2", "bb")
	q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "mid.qcow2")
	io("mid.qcow2", "write -P 4 512k 512")
	q("bitmap", "--add", "-g", "512", "mid.qcow2", "mb")
	q("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2")
	q("bitmap", "--add", "top.qcow2", "tb")
	io("top.qcow2", "write -P 2 64k 4k", "write -z 1M 128k", "write -P 3 3M 1k", "discard 2M 64k")
	q("create", "-q", "-f", "qcow2", "nb.qcow2", "4M")
	io("nb.qcow2", "write -P 1 0 2M", "write -P 9 2M 64k")
	q("create", "-q", "-f", "raw", "src.raw", "4M")
	sh(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 5 128k 8k", "-c", "write -P 6 2M 1M", "src.raw")
	q("create", "-q", "-f", "qcow2", "tgt.qcow2", "4M")
	io("tgt.qcow2", "write -P 7 0 64k")
	q("bitmap", "--add", "tgt.qcow2", "gb")
	q("bitmap", "--add", "--disable", "tgt.qcow2", "gd")
	return []string{"base.qcow2", "mid.qcow2", "top.qcow2", "nb.qcow2", "src.raw", "tgt.qcow2"}
}

// bitmapsOf names every image's bitmaps in bitmapChain.
var bitmapsOf = map[string][]string{
	"base.qcow2": {"bb"}, "mid.qcow2": {"mb"}, "top.qcow2": {"tb"}, "tgt.qcow2": {"gb", "gd"},
}

func TestWritingCommandsMarkBitmapsAsQemu(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	files := bitmapChain(t, src)
	for _, c := range []string{
		"commit -q top.qcow2",
		"commit -q -d top.qcow2",
		"commit -q -b base.qcow2 top.qcow2",
		"rebase -q -b nb.qcow2 -F qcow2 top.qcow2",
		"rebase -q -b base.qcow2 -F qcow2 top.qcow2",
		"rebase -q -b  top.qcow2", // -b "" (Fields drops it: see below)
		"rebase -q -u -b nb.qcow2 -F qcow2 top.qcow2",
		"convert -n -O qcow2 src.raw tgt.qcow2",
		"convert -n -O qcow2 top.qcow2 tgt.qcow2",
	} {
		t.Run(c, func(t *testing.T) {
			t.Parallel()
			args := strings.Fields(c)
			if strings.Contains(c, "-b  ") {
				args = []string{"rebase", "-q", "-b", "", "top.qcow2"}
			}
			qdir, odir := isolated(t, src, files...), isolated(t, src, files...)
			want, got := qemu(t, qdir, args...), ours(t, odir, args...)
			got.stderr = strings.ReplaceAll(got.stderr, "qnbd-img:", "qemu-img:")
			if got != want {
				t.Fatalf("%s:\nqemu-img: %v\nqnbd-img: %v", c, want, got)
			}
			for img, names := range bitmapsOf {
				for _, name := range names {
					w, g := dirtyMap(t, qdir, img, name), dirtyMap(t, odir, img, name)
					if w != g {
						t.Errorf("%s: bitmap %s of %s:\nqemu-img's result:\n%s\nqnbd-img's result:\n%s", c, name, img, w, g)
					}
				}
				if r := qemu(t, odir, "check", "-q", img); r.code != 0 {
					t.Errorf("%s: check %s: %v", c, img, r)
				}
			}
		})
	}
}
