// RepairAll's snapshot table rewrite next to references past the end of the file.
package qcow2

import (
	"encoding/binary"
	"os"
	"testing"
)

// TestRepairSnapshotTableAvoidsPastEOFReferences: RepairAll rewrites a snapshot table with an
// incomplete entry while an L2 entry (active and s1 share the table) points one cluster past
// the end of the file. The new table must not be placed on that cluster: the repair would turn
// a dangling reference into a cross-link (guest reads of 64 KiB then return the snapshot
// table; qemu-img check afterwards: "cluster 8 refcount=1 reference=3").
func TestRepairSnapshotTableAvoidsPastEOFReferences(t *testing.T) {
	dir := t.TempDir()
	img := engCreate(t, dir, "b.qcow2", "compat=1.1", "1M")
	engQemu(t, "qemu-io", "-c", "write -P 1 0 64k", img)
	engQemu(t, "qemu-img", "snapshot", "-c", "s1", img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint32(b[snapTableAt(b)+36:], 0) // entry 0 incomplete
	if err := os.WriteFile(img, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m := ccOpenImg(t, img)
	cs := uint64(64 << 10)
	dangling := (uint64(len(b)) + cs - 1) / cs * cs
	m.putU64(m.l2EntryOff(64<<10), dangling)
	res, err := Check(img, RepairAll)
	if err != nil {
		t.Fatalf("RepairAll: %v", err)
	}
	after, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if at := binary.BigEndian.Uint64(after[offSnapshotsOffset:]); at == dangling {
		t.Errorf("new snapshot table placed at %#x, the cluster a broken L2 entry points at (messages %q)", at, res.Messages)
	}
}
