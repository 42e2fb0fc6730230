// Snapshot create/apply/delete by the engine, checked against qemu-img: the images stay
// consistent, and snapshots interchange both ways with identical contents.
package qcow2

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// snapWrite writes b at off through the engine and returns it.
func snapWrite(t *testing.T, img *Image, off int64, b []byte) {
	t.Helper()
	if _, err := img.WriteAt(b, off); err != nil {
		t.Fatalf("write at %d: %v", off, err)
	}
}

// snapOf returns the guest contents of snapshot name as qemu-img reads them.
func snapOf(t *testing.T, path, name string) []byte {
	t.Helper()
	return engConvertRaw(t, path, "-l", "snapshot.name="+name)
}

func TestSnapshotsCreatedByUsAreQemus(t *testing.T) {
	for _, opts := range []string{"cluster_size=4096", "compat=0.10,cluster_size=4096", "extended_l2=on,cluster_size=16384", "refcount_bits=8,cluster_size=4096"} {
		t.Run(opts, func(t *testing.T) {
			dir := t.TempDir()
			p := engCreate(t, dir, "a.qcow2", opts, "4M")
			engQemu(t, "qemu-io", "-c", "write -P 0x11 0 1M", "-c", "write -c -P 0x22 2M 64k", p)
			img := openTestImage(t, p, OpenOptions{})
			before := engReadAll(t, img)
			when := time.Unix(1700000000, 123456000)
			sn, err := img.CreateSnapshot(SnapshotSpec{Name: "s1", Date: when})
			if err != nil {
				t.Fatal(err)
			}
			if sn.ID != "1" || sn.DiskSize != 4<<20 {
				t.Fatalf("snapshot %+v", sn)
			}
			// Writes after the snapshot copy the shared clusters: the snapshot keeps its data.
			pat := bytes.Repeat([]byte{0x33}, 8192)
			snapWrite(t, img, 4096, pat)
			snapWrite(t, img, 2<<20, pat)
			after := engReadAll(t, img)
			if _, err := img.CreateSnapshot(SnapshotSpec{Name: "s2", Date: when}); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			corpus.RequireClean(t, p)
			list := engQemu(t, "qemu-img", "snapshot", "-l", p)
			if !strings.Contains(list, "1         s1") || !strings.Contains(list, "2         s2") {
				t.Fatalf("qemu-img snapshot -l:\n%s", list)
			}
			if got := snapOf(t, p, "s1"); !bytes.Equal(got, before) {
				t.Fatalf("snapshot s1 differs: %s", engFirstDiff(got, before))
			}
			if got := snapOf(t, p, "s2"); !bytes.Equal(got, after) {
				t.Fatalf("snapshot s2 differs: %s", engFirstDiff(got, after))
			}
			// QEMU applies and deletes what we created.
			engQemu(t, "qemu-img", "snapshot", "-a", "s1", p)
			if got := engConvertRaw(t, p); !bytes.Equal(got, before) {
				t.Fatalf("after qemu-img snapshot -a s1: %s", engFirstDiff(got, before))
			}
			engQemu(t, "qemu-img", "snapshot", "-d", "s1", p)
			engQemu(t, "qemu-img", "snapshot", "-d", "s2", p)
			corpus.RequireClean(t, p)
		})
	}
}

func TestSnapshotsCreatedByQemuApplyAndDelete(t *testing.T) {
	for _, opts := range []string{"cluster_size=4096", "compat=0.10", "extended_l2=on"} {
		t.Run(opts, func(t *testing.T) {
			dir := t.TempDir()
			p := engCreate(t, dir, "a.qcow2", opts, "8M")
			engQemu(t, "qemu-io", "-c", "write -P 0x11 0 3M", "-c", "write -c -P 0x22 5M 128k", p)
			engQemu(t, "qemu-img", "snapshot", "-c", "base", p)
			base := engConvertRaw(t, p)
			engQemu(t, "qemu-io", "-c", "write -P 0x44 1M 3M", "-c", "write -z 5M 64k", p)
			engQemu(t, "qemu-img", "snapshot", "-c", "second", p)
			second := engConvertRaw(t, p)
			engQemu(t, "qemu-io", "-c", "write -P 0x55 0 8M", p)

			img := openTestImage(t, p, OpenOptions{})
			if err := img.ApplySnapshot("base"); err != nil {
				t.Fatal(err)
			}
			if got := engReadAll(t, img); !bytes.Equal(got, base) {
				t.Fatalf("after apply base: %s", engFirstDiff(got, base))
			}
			snapWrite(t, img, 0, bytes.Repeat([]byte{0x66}, 65536))
			if err := img.DeleteSnapshot("", "base"); err != nil {
				t.Fatal(err)
			}
			if err := img.ApplySnapshot("2"); err != nil {
				t.Fatal(err)
			}
			if got := engReadAll(t, img); !bytes.Equal(got, second) {
				t.Fatalf("after apply 2: %s", engFirstDiff(got, second))
			}
			if err := img.DeleteSnapshot("2", ""); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			corpus.RequireClean(t, p)
			if got := engConvertRaw(t, p); !bytes.Equal(got, second) {
				t.Fatalf("final contents: %s", engFirstDiff(got, second))
			}
			if out := engQemu(t, "qemu-img", "snapshot", "-l", p); out != "" {
				t.Fatalf("snapshots left:\n%s", out)
			}
		})
	}
}

func TestSnapshotApplyResizesToTheSnapshotsSize(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "", "2M")
	engQemu(t, "qemu-io", "-c", "write -P 0x11 0 2M", p)
	engQemu(t, "qemu-img", "snapshot", "-c", "small", p)
	engQemu(t, "qemu-img", "resize", p, "300M")
	engQemu(t, "qemu-io", "-c", "write -P 0x22 290M 1M", p)
	img := openTestImage(t, p, OpenOptions{})
	if err := img.ApplySnapshot("small"); err != nil {
		t.Fatal(err)
	}
	if img.Size() != 2<<20 {
		t.Fatalf("size %d after apply", img.Size())
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte{0x11}, 2<<20)
	if got := engConvertRaw(t, p); !bytes.Equal(got, want) {
		t.Fatalf("contents: %s", engFirstDiff(got, want))
	}
	raw := filepath.Join(dir, "x")
	_ = os.Remove(raw)
}

func TestSnapshotCreateRefusedWhenRefcountsAreFull(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "refcount_bits=1,cluster_size=4096", "4M")
	engQemu(t, "qemu-io", "-c", "write -P 0x11 0 1M", p)
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = img.CreateSnapshot(SnapshotSpec{Name: "s1"})
	if !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("create with 1-bit refcounts: %v, want EINVAL", err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	// As QEMU: the L1 copy leaks, nothing else changes.
	if q := corpus.QemuCheck(t, p, corpus.CheckOptions{}); q.ExitCode != 3 || q.Leaks != 1 || q.Corruptions != 0 {
		t.Fatalf("qemu-img check %v, want exactly 1 leaked cluster", q)
	}
	if got, want := engConvertRaw(t, p), append(bytes.Repeat([]byte{0x11}, 1<<20), make([]byte, 3<<20)...); !bytes.Equal(got, want) {
		t.Fatalf("contents: %s", engFirstDiff(got, want))
	}
}
