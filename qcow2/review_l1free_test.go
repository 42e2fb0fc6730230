//go:build review

// Review reproduction: frees applied while the active L1 on disk still points at the L2 table
// that holds the freed references.
package qcow2

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// TestReview_FreeAppliedBeforeL1Switch: when copying an L2 table shared with a snapshot fails
// to write the L1 entry (transient EIO), l2ForWrite keeps the switch in memory (L1 entry dirty,
// pointing at the copy) and defers only the old table's own free until the L1 is clean. Later
// changes to the copy free the data clusters it no longer references; applyFrees applies those
// frees once the L2 tables are durable, but the L1 entry on disk still points at the old,
// shared table, whose entries still reference those clusters. Refcounts then drop below the
// number of references on disk: the next Flush writes them (step 2) before the L1 (step 4),
// and a crash in between leaves refcount 1 under 2 references. (Deleting the snapshot from
// that state drops them to 0 while the active table still maps them: a cross-link.)
func TestReview_FreeAppliedBeforeL1Switch(t *testing.T) {
	const cs = 64 << 10
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "cluster_size=64k", "1G")
	engQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 128M", p)
	engQemu(t, "qemu-img", "snapshot", "-c", "s1", p)
	s, err := memstore.FromFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	l1off := int64(h.L1TableOffset)
	img, err := OpenStorage(s, dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	// The first write copies L2 table 0 (shared with s1); its L1 entry write fails once.
	s.Inject(&memstore.Rule{Kind: memstore.OpWrite, Match: func(op memstore.Op) bool { return op.Off >= l1off && op.Off < l1off+512 }})
	if _, err := img.WriteAt(make([]byte, 512), 0); err == nil {
		t.Fatal("setup: the write whose L1 entry write fails succeeded")
	}
	s.Inject(nil)
	// Discard every other cluster of the copied table: maxPendingFrees frees (data clusters
	// shared with s1, refcount 2 -> 1), applied as one batch.
	for i := 0; i < maxPendingFrees; i++ {
		if err := img.Discard(uint64(2*i+1)*cs, cs); err != nil {
			t.Fatal(err)
		}
	}
	img.mu.Lock()
	l1dirty := len(img.l1.dirty)
	img.mu.Unlock()
	if l1dirty == 0 {
		t.Fatal("setup: the L1 entry is not dirty any more")
	}
	base := s.Clone()
	s.StartLog()
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	log := s.Log()
	l1At := -1
	for i, op := range log {
		if rvWriteTouches(op, l1off, 512) {
			l1At = i
			break
		}
	}
	if l1At < 0 {
		t.Fatal("the Flush wrote no L1 entry")
	}
	// Crash just before the L1 write (everything before it was synced, or may have landed).
	st := rvReplay(t, base, log, l1At, nil)
	path := filepath.Join(dir, "crashed.qcow2")
	if err := st.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	code, out := engQemuCheck(t, path)
	if os.Getenv("QNBD_REVIEW_VERBOSE") != "" {
		t.Log(out)
	}
	if code == 2 {
		lines := strings.Split(out, "\n")
		// What deleting the snapshot then makes of it: refcount 0 under a live reference.
		engQemu(t, "qemu-img", "snapshot", "-d", "s1", path)
		_, after := engQemuCheck(t, path)
		first := ""
		for _, l := range strings.Split(after, "\n") {
			if strings.Contains(l, "refcount=0 reference=1") {
				first = l
				break
			}
		}
		t.Fatalf("crash before the Flush's L1 write: qemu-img check exit 2 (corruption), e.g.\n%s\n...\n%s\nafter qemu-img snapshot -d s1: %q",
			strings.Join(lines[:min(3, len(lines))], "\n"), strings.Join(lines[max(0, len(lines)-8):], "\n"), first)
	}
	ours, err := CheckStorage(st, RepairNone)
	if err != nil || ours.Corruptions > 0 {
		t.Fatalf("our check: %v, %d corruptions", err, ours.Corruptions)
	}
}
