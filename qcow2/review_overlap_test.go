//go:build review

// Review reproduction: guest data writes are checked against cached L2 tables and refcount
// blocks only, not against every table the in-memory L1 and reftable name (QEMU's default
// "cached" overlap check covers all of them).
package qcow2

import (
	"bytes"
	"encoding/binary"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// TestReview_DataWriteOverUncachedL2Table: an image whose L2 entry for guest cluster 0 points
// (COPIED) at the active L2 table of another part of the disk, which qemu-img check reports
// as corrupt. QEMU refuses a guest write there ("Preventing invalid write on metadata
// (overlaps with active L2 table)") and marks the image corrupt. The engine checks the write
// against the L2 tables in its cache only; the other table was never loaded, so the guest's
// bytes overwrite it and the data mapped through it is lost.
func TestReview_DataWriteOverUncachedL2Table(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "cluster_size=64k", "1G")
	engQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k", "-c", "write -P 0x22 512M 64k", p)
	s, err := memstore.FromFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	var l1 [16]byte
	if _, err := s.ReadAt(l1[:], int64(h.L1TableOffset)); err != nil {
		t.Fatal(err)
	}
	t1 := L1Entry(binary.BigEndian.Uint64(l1[0:])).L2Offset()
	t2 := L1Entry(binary.BigEndian.Uint64(l1[8:])).L2Offset()
	if t1 == 0 || t2 == 0 {
		t.Fatalf("setup: L2 tables %#x %#x", uint64(t1), uint64(t2))
	}
	var e [8]byte
	binary.BigEndian.PutUint64(e[:], uint64(MakeL2Entry(t2, true, false)))
	if _, err := s.WriteAt(e[:], int64(t1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "crafted.qcow2")
	if err := s.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	code, out := engQemuCheck(t, path)
	t.Logf("qemu-img check of the crafted image: exit %d\n%s", code, out)
	// The oracle: QEMU refuses the same write.
	qp := filepath.Join(dir, "qemu.qcow2")
	if err := s.WriteFile(qp); err != nil {
		t.Fatal(err)
	}
	qout, _ := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0xaa 0 64k", qp).CombinedOutput()
	if !strings.Contains(string(qout), "overlaps with active L2 table") {
		t.Fatalf("setup: QEMU does not refuse the write:\n%s", qout)
	}

	img, err := OpenStorage(s, dir, OpenOptions{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	defer img.Close()
	_, werr := img.WriteAt(bytes.Repeat([]byte{0xaa}, 64<<10), 0)
	if werr != nil {
		t.Logf("the write over the L2 table was refused: %v", werr)
		return
	}
	got := make([]byte, 64<<10)
	_, rerr := img.ReadAt(got, 512<<20)
	t.Fatalf("a guest write landed on the active L2 table at %#x (refused by QEMU's overlap check); reading the data it mapped now gives err=%v, first byte %#x (was 0x22)", uint64(t2), rerr, got[0])
}
