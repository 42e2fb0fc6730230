// qnbd-img amend -o compat=0.10 on images with internal snapshots, against qemu-img 7.2 on
// copies of the same images (the shapes of QEMU's iotest 061: zero clusters only in a
// snapshot, in an L2 table the snapshot shares, over a backing file; and preallocated zero
// clusters shared between tables, where qemu-img's own result fails check and loses
// snapshot data). The same output, status and -p bytes; an image that checks clean, whose
// active layer and every snapshot read as before; byte for byte qemu-img's file wherever
// qemu-img's checks clean.
package main

import (
	"slices"
	"strings"
	"testing"
)

// downgradeSnapshotImages makes, in dir, version 3 images with internal snapshots and zero
// clusters, and returns their names and snapshot names.
func downgradeSnapshotImages(t *testing.T, dir string) map[string][]string {
	t.Helper()
	q := func(args ...string) { sh(t, dir, "qemu-img", args...) }
	io := func(img string, cmds ...string) { qemuIO(t, dir, img, cmds...) }
	q("create", "-q", "-f", "qcow2", "base.qcow2", "8M")
	io("base.qcow2", "write -P 0xaa 0 8M")
	// iotest 061, "zero expansion on inactive clusters".
	q("create", "-q", "-f", "qcow2", "inactive.qcow2", "8M")
	io("inactive.qcow2", "write -z 0 128k")
	q("snapshot", "-c", "foo", "inactive.qcow2")
	io("inactive.qcow2", "write -P 0x2a 0 128k")
	// iotest 061, "zero expansion on shared L2 table".
	q("create", "-q", "-f", "qcow2", "sharedl2.qcow2", "8M")
	io("sharedl2.qcow2", "write -z 0 128k")
	q("snapshot", "-c", "foo", "sharedl2.qcow2")
	// The same over a backing file: new clusters of zeros counted twice (table shared).
	q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "sharedback.qcow2")
	io("sharedback.qcow2", "write -z 0 128k", "write -z -u 1M 64k")
	q("snapshot", "-c", "foo", "sharedback.qcow2")
	// iotest 061, "zero expansion on backed inactive clusters", with two snapshots.
	q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "backed.qcow2")
	io("backed.qcow2", "write -z 0 128k", "write -P 1 1M 64k")
	q("snapshot", "-c", "s1", "backed.qcow2")
	io("backed.qcow2", "write -P 0x2a 0 64k", "write -z 2M 64k")
	q("snapshot", "-c", "s2", "backed.qcow2")
	io("backed.qcow2", "write -P 3 3M 64k")
	// Preallocated zero clusters shared with a snapshot's table (qemu-img zeroes the
	// snapshot's data), without and with a backing file.
	q("create", "-q", "-f", "qcow2", "prealloc.qcow2", "8M")
	io("prealloc.qcow2", "write -P 1 0 128k", "write -P 3 2M 64k", "write -z 2M 64k")
	q("snapshot", "-c", "s1", "prealloc.qcow2")
	io("prealloc.qcow2", "write -P 2 0 64k", "write -z 64k 64k")
	q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "preback.qcow2")
	io("preback.qcow2", "write -P 1 0 128k", "write -P 3 2M 64k", "write -z 2M 64k")
	q("snapshot", "-c", "s1", "preback.qcow2")
	io("preback.qcow2", "write -z 64k 64k")
	q("snapshot", "-c", "s2", "preback.qcow2")
	io("preback.qcow2", "write -P 4 4M 64k")
	// An L1 table of several entries (512-byte clusters: 32 KiB per L2 table), for the
	// progress steps.
	q("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "small.qcow2", "1M")
	io("small.qcow2", "write -z 0 64k", "write -P 1 256k 4k", "write -z 512k 1k")
	q("snapshot", "-c", "s1", "small.qcow2")
	io("small.qcow2", "write -P 2 0 4k", "write -z 256k 512")
	return map[string][]string{
		"inactive.qcow2": {"foo"}, "sharedl2.qcow2": {"foo"}, "sharedback.qcow2": {"foo"},
		"backed.qcow2":   {"s1", "s2"},
		"prealloc.qcow2": {"s1"}, "preback.qcow2": {"s1", "s2"}, "small.qcow2": {"s1"},
	}
}

func TestAmendDowngradeWithSnapshotsMatchesQemu(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	imgs := downgradeSnapshotImages(t, src)
	for img, snaps := range imgs {
		t.Run(img, func(t *testing.T) {
			t.Parallel()
			dir := isolated(t, src, img, "base.qcow2")
			want, got := runOnCopies(t, dir, []string{img}, []string{"amend", "-p", "-o", "compat=0.10", img})
			if got != want {
				t.Errorf("amend:\nqemu-img: %v\nqnbd-img: %v", want, got)
			}
			if r := qemu(t, dir, "check", "o."+img); r.code != 0 {
				t.Errorf("check of qnbd-img's result: %v", r)
			}
			if r := qemu(t, dir, "compare", img, "o."+img); r.code != 0 {
				t.Errorf("the active layer reads differently: %v", r)
			}
			for _, sn := range snaps {
				if a, b := snapshotRaw(t, dir, img, sn), snapshotRaw(t, dir, "o."+img, sn); a != b {
					t.Errorf("snapshot %s reads differently after the downgrade", sn)
				}
			}
			if wi, gi := qemu(t, dir, "info", "q."+img), qemu(t, dir, "info", "o."+img); infoBody(wi.stdout) != infoBody(gi.stdout) {
				t.Errorf("info differs:\n%s\nvs\n%s", wi.stdout, gi.stdout)
			}
			if qemu(t, dir, "check", "q."+img).code == 0 && differs(t, dir, "q."+img, "o."+img) {
				t.Errorf("qemu-img's result checks clean, but the files differ")
			}
		})
	}
}

// snapshotRaw returns the guest contents of snapshot sn of img in dir: applied on a copy by
// qemu-img, then converted to raw.
func snapshotRaw(t *testing.T, dir, img, sn string) string {
	t.Helper()
	cp := "snap." + img
	sh(t, dir, "cp", img, cp)
	sh(t, dir, "qemu-img", "snapshot", "-a", sn, cp)
	sh(t, dir, "qemu-img", "convert", "-O", "raw", cp, cp+".raw")
	return strings.TrimSpace(sh(t, dir, "sha256sum", cp+".raw")[:64])
}

// TestAmendResizeWithSnapshotsMatchesQemu runs iotest 061's "resize with snapshots" with
// each tool on its own copy: a version 2 image with a snapshot refuses a resize, is
// upgraded and grown by amend, gets a second snapshot taken at the larger size, is shrunk,
// refuses the downgrade while that snapshot's size differs, and downgrades once it is
// applied and deleted. Every step's output and status match; the results read the same
// and check clean.
func TestAmendResizeWithSnapshotsMatchesQemu(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=0.10", "r.qcow2", "32M")
	qemuIO(t, dir, "r.qcow2", "write -P 0x2a 24M 64k")
	sh(t, dir, "qemu-img", "snapshot", "-c", "foo", "r.qcow2")
	sh(t, dir, "cp", "r.qcow2", "q.r.qcow2")
	sh(t, dir, "cp", "r.qcow2", "o.r.qcow2")
	for _, step := range [][]string{
		{"resize", "IMG", "64M"},
		{"amend", "-o", "compat=1.1,size=128M", "IMG"},
		{"snapshot", "-c", "bar", "IMG"},
		{"resize", "--shrink", "IMG", "64M"},
		{"amend", "-o", "compat=0.10,size=32M", "IMG"},
		{"snapshot", "-a", "bar", "IMG"},
		{"snapshot", "-d", "bar", "IMG"},
		{"amend", "-o", "compat=0.10,size=32M", "IMG"},
	} {
		qa, oa := slices.Clone(step), slices.Clone(step)
		i := slices.Index(step, "IMG")
		qa[i], oa[i] = "q.r.qcow2", "o.r.qcow2"
		want, got := qemu(t, dir, qa...), ours(t, dir, oa...)
		got.stderr = strings.ReplaceAll(got.stderr, "o.r.qcow2", "q.r.qcow2")
		if got != want {
			t.Fatalf("%q:\nqemu-img: %v\nqnbd-img: %v", step, want, got)
		}
	}
	if r := qemu(t, dir, "check", "o.r.qcow2"); r.code != 0 {
		t.Errorf("check: %v", r)
	}
	if r := qemu(t, dir, "compare", "q.r.qcow2", "o.r.qcow2"); r.code != 0 {
		t.Errorf("the results read differently: %v", r)
	}
	if a, b := snapshotRaw(t, dir, "q.r.qcow2", "foo"), snapshotRaw(t, dir, "o.r.qcow2", "foo"); a != b {
		t.Error("snapshot foo reads differently")
	}
	if wi, gi := qemu(t, dir, "info", "q.r.qcow2"), qemu(t, dir, "info", "o.r.qcow2"); infoBody(wi.stdout) != infoBody(gi.stdout) {
		t.Errorf("info differs:\n%s\nvs\n%s", wi.stdout, gi.stdout)
	}
}
