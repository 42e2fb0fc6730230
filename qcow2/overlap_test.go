// Overlap checks: guest data writes, allocations and refcount writes are checked against
// every table the active L1 and the reftable name, not only the cached ones (QEMU's default
// "cached" overlap check covers all of them); QEMU (qemu-io) is the oracle.
package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// overlapImage is an image made by qemu-io with guest data at 0 and at 512M, then changed by
// craft, which gets the store and the host offsets of the two L2 tables (t1 for the guest
// range at 0, t2 for the one at 512M).
func overlapImage(t *testing.T, dir, opts, lowData string, craft func(s *memstore.Store, h *Header, t1, t2 HostOffset)) *memstore.Store {
	t.Helper()
	p := engCreate(t, dir, "a.qcow2", opts, "1G")
	engQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 "+lowData, "-c", "write -P 0x22 512M 4k", p)
	s := storeOf(t, p)
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	g := h.Geometry()
	l1 := func(i l1Index) HostOffset {
		var e [8]byte
		if _, err := s.ReadAt(e[:], int64(h.L1TableOffset)+int64(i)*8); err != nil {
			t.Fatal(err)
		}
		return l1Entry(binary.BigEndian.Uint64(e[:])).l2Offset()
	}
	t1, t2 := l1(0), l1(GuestOffset(512<<20).l1Index(g))
	if t1 == 0 || t2 == 0 {
		t.Fatalf("setup: L2 tables %#x %#x", uint64(t1), uint64(t2))
	}
	craft(s, h, t1, t2)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	return s
}

// qemuRefusesOverlap runs qemu-io's write on a copy of s and requires QEMU's refusal: the overlap
// check's message and the corrupt bit.
func qemuRefusesOverlap(t *testing.T, dir string, s *memstore.Store, write string) {
	t.Helper()
	qp := filepath.Join(dir, "qemu.qcow2")
	if err := s.WriteFile(qp); err != nil {
		t.Fatal(err)
	}
	qout, _ := exec.Command("qemu-io", "-f", "qcow2", "-c", write, qp).CombinedOutput()
	if !strings.Contains(string(qout), "overlaps with active L2 table") {
		t.Fatalf("setup: QEMU does not refuse %q:\n%s", write, qout)
	}
	if info := engQemu(t, "qemu-img", "info", qp); !strings.Contains(info, "corrupt: true") {
		t.Fatalf("setup: QEMU did not mark the image corrupt:\n%s", info)
	}
}

// engineRefusesOverlap opens s, runs write, and requires what QEMU does: the request fails with
// EIO (ErrCorrupt), the image is marked corrupt on disk, and the 0x22 at guest 512M (mapped
// by the L2 table in danger) still reads back.
func engineRefusesOverlap(t *testing.T, dir string, s *memstore.Store, write func(img *Image) error) {
	t.Helper()
	img, err := OpenStorage(s, dir, OpenOptions{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	werr := write(img)
	got := make([]byte, 4096)
	_, rerr := img.ReadAt(got, 512<<20)
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	_ = img.Close()
	if werr == nil {
		t.Fatalf("the write that QEMU refuses (overlap with an active L2 table) succeeded; the data at 512M now reads err=%v, first byte %#x (was 0x22)", rerr, got[0])
	}
	t.Logf("refused: %v", werr)
	if !errors.Is(werr, ErrCorrupt) || !errors.Is(werr, syscall.EIO) {
		t.Errorf("the refusal is not ErrCorrupt/EIO: %v", werr)
	}
	if rerr != nil || !bytes.Equal(got, bytes.Repeat([]byte{0x22}, len(got))) {
		t.Errorf("the data at 512M: err %v, first byte %#x (want 0x22)", rerr, got[0])
	}
	if !h.Corrupt() {
		t.Error("the image is not marked corrupt on disk")
	}
	// Nothing written at Close (refcounts, L2 tables) may have reached the table either.
	ro, err := OpenStorage(s.Reopen(), dir, OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer ro.Close()
	if _, err := ro.ReadAt(got, 512<<20); err != nil || !bytes.Equal(got, bytes.Repeat([]byte{0x22}, len(got))) {
		t.Errorf("after Close, the data at 512M: err %v, first byte %#x (want 0x22)", err, got[0])
	}
}

// TestOverlapRefusesDataWriteOverUncachedL2: an image whose L2 entry for guest cluster 0 points
// (COPIED) at the active L2 table of another part of the disk, which qemu-img check reports
// as corrupt. QEMU refuses a guest write there ("Preventing invalid write on metadata
// (overlaps with active L2 table)") and marks the image corrupt. The engine checked the write
// against the L2 tables in its cache only; the other table was never loaded, so the guest's
// bytes overwrote it and the data mapped through it was lost.
func TestOverlapRefusesDataWriteOverUncachedL2(t *testing.T) {
	dir := t.TempDir()
	s := overlapImage(t, dir, "cluster_size=64k", "64k", func(s *memstore.Store, _ *Header, t1, t2 HostOffset) {
		var e [8]byte
		binary.BigEndian.PutUint64(e[:], uint64(makeL2Entry(t2, true, false)))
		if _, err := s.WriteAt(e[:], int64(t1)); err != nil {
			t.Fatal(err)
		}
	})
	qemuRefusesOverlap(t, dir, s, "write -P 0xaa 0 64k")
	engineRefusesOverlap(t, dir, s, func(img *Image) error {
		_, err := img.WriteAt(bytes.Repeat([]byte{0xaa}, 64<<10), 0)
		return err
	})
}

// TestOverlapRefusesAllocationOverUncachedL2: the refcount of an active L2 table is 0 (crafted),
// so the allocator's first free cluster is that table. QEMU hands it out and then refuses the
// data write over it; the engine's claim must refuse it too, although the table is not cached.
func TestOverlapRefusesAllocationOverUncachedL2(t *testing.T) {
	dir := t.TempDir()
	s := overlapImage(t, dir, "cluster_size=64k", "64k", func(s *memstore.Store, h *Header, _, t2 HostOffset) {
		g := h.Geometry()
		var e [8]byte
		if _, err := s.ReadAt(e[:], int64(h.RefTableOffset)); err != nil {
			t.Fatal(err)
		}
		rb := refTableEntry(binary.BigEndian.Uint64(e[:])).Offset()
		c := t2.cluster(g)
		if c.refTableIndex(g) != 0 {
			t.Fatalf("setup: L2 table %#x not counted by the first refcount block", uint64(t2))
		}
		// 16-bit refcounts (the default).
		if _, err := s.WriteAt([]byte{0, 0}, int64(rb)+int64(c.refBlockIndex(g))*2); err != nil {
			t.Fatal(err)
		}
	})
	qemuRefusesOverlap(t, dir, s, "write -P 0xaa 1M 64k")
	engineRefusesOverlap(t, dir, s, func(img *Image) error {
		_, err := img.WriteAt(bytes.Repeat([]byte{0xaa}, 64<<10), 1<<20)
		return err
	})
}

// TestOverlapRefusesRefBlockOverUncachedL2: a reftable entry (crafted) names an active L2 table
// as the refcount block of the next 8M of the file. An allocation reaching that region must
// not take L2 entries for refcounts and write refcounts over the table: QEMU refuses that
// write and marks the image corrupt; the engine refuses the block when it loads it.
func TestOverlapRefusesRefBlockOverUncachedL2(t *testing.T) {
	dir := t.TempDir()
	s := overlapImage(t, dir, "cluster_size=4k", "4M", func(s *memstore.Store, h *Header, _, t2 HostOffset) {
		g := h.Geometry()
		if end, _ := s.Size(); uint64(end) >= g.Bytes(ClusterCount(g.refBlockEntries())) {
			t.Fatalf("setup: the file (%d bytes) reaches past the first refcount block's region", end)
		}
		var e [8]byte
		binary.BigEndian.PutUint64(e[:], uint64(t2))
		if _, err := s.WriteAt(e[:], int64(h.RefTableOffset)+8); err != nil {
			t.Fatal(err)
		}
	})
	qemuRefusesOverlap(t, dir, s, "write -P 0x33 16M 8M")
	engineRefusesOverlap(t, dir, s, func(img *Image) error {
		_, err := img.WriteAt(bytes.Repeat([]byte{0x33}, 8<<20), 16<<20)
		return err
	})
}
