package qcow2

import (
	"os"
	"path/filepath"
	"testing"
)

// TestExpandZeroClustersKeepsSnapshotsAndCounts: a preallocated zero cluster that the active
// L2 table shares with a snapshot's (the active layer zeroed a cluster the snapshot holds
// data in) is not zeroed in place, so after the downgrade the snapshot still reads its data,
// qemu-img check finds no error (no COPIED flag on a shared cluster, no leak), and the
// status calls count every L1 entry of every table once, ending at the total.
func TestExpandZeroClustersKeepsSnapshotsAndCounts(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "img.qcow2")
	engQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", p, "1M")
	qemuIO(t, p, "write -P 1 0 64k", "write -z 128k 8k")
	engQemu(t, "qemu-img", "snapshot", "-c", "s1", p)
	qemuIO(t, p, "write -P 2 256k 4k", "write -z 4k 8k") // active table copied; 4k..12k shared
	before := snapshotBytes(t, dir, p, "s1")

	img := openTestImage(t, p, OpenOptions{})
	var calls, last, total int64
	status := func(done, all int64) { calls, last, total = calls+1, done, all }
	if err := img.PrepareDowngrade(); err != nil {
		t.Fatal(err)
	}
	if err := img.ExpandZeroClusters(status); err != nil {
		t.Fatal(err)
	}
	if err := img.Downgrade(); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if calls != 2 || last != 2 || total != 2 { // one L1 entry in each of two tables
		t.Errorf("status: %d calls, last %d of %d; want 2 calls ending at 2 of 2", calls, last, total)
	}
	engQemu(t, "qemu-img", "check", p) // fails the test unless check exits 0
	if after := snapshotBytes(t, dir, p, "s1"); string(after) != string(before) {
		t.Error("snapshot s1 reads differently after the downgrade")
	}
	qemuIO(t, p, "read -P 0 4k 8k", "read -P 0 128k 8k", "read -P 1 0 4k", "read -P 2 256k 4k")
}

// snapshotBytes returns the guest contents of snapshot sn of the image at p, read by QEMU
// from a copy on which it was applied.
func snapshotBytes(t *testing.T, dir, p, sn string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	cp, raw := filepath.Join(dir, "snap.qcow2"), filepath.Join(dir, "snap.raw")
	if err := os.WriteFile(cp, b, 0o644); err != nil {
		t.Fatal(err)
	}
	engQemu(t, "qemu-img", "snapshot", "-a", sn, cp)
	engQemu(t, "qemu-img", "convert", "-O", "raw", cp, raw)
	out, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
