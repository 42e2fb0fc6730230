// Flush order, frees: a batch of frees is never applied while the active L1 on disk still
// points at the L2 table that holds the freed references.
package qcow2

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// TestFreesWaitForL1EntryOnDisk: when copying an L2 table shared with a snapshot fails
// to write the L1 entry (transient EIO), l2ForWrite keeps the switch in memory (L1 entry dirty,
// pointing at the copy). Later changes to the copy free the data clusters it no longer
// references; the on-disk L1 still points at the old, shared table, whose entries still
// reference those clusters. Applying those frees before the L1 entry is on disk left refcounts
// below the references on disk (refcount 1 under 2 references; deleting the snapshot from that
// state drops them to 0 while the active table still maps them: a cross-link). applyFrees now
// writes the dirty L1 entries (after the L2 tables) before any free. Every crash state from
// the discards on (the durable prefix at each barrier, and just before each L1 write) must
// check without corruption, by qemu-img and by our check.
func TestFreesWaitForL1EntryOnDisk(t *testing.T) {
	t.Parallel()
	const cs = 16 << 10
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "cluster_size=16k", "1G")
	engQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 32M", p)
	engQemu(t, "qemu-img", "snapshot", "-c", "s1", p)
	s := storeOf(t, p)
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
	img.mu.Lock()
	l1dirty := len(img.l1.dirty)
	img.mu.Unlock()
	if l1dirty == 0 {
		t.Fatal("setup: the L1 entry is not dirty after its failed write")
	}
	base := s.Clone()
	s.StartLog()
	// Discard every other cluster of the copied table: maxPendingFrees frees (data clusters
	// shared with s1, refcount 2 -> 1), applied as one batch; then a Flush.
	for i := 0; i < maxPendingFrees; i++ {
		if err := img.Discard(GuestOffset(uint64(2*i+1)*cs), cs); err != nil {
			t.Fatal(err)
		}
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	log := s.Log()
	// The crash states: log[:at] landed, for at just before each write (the ones before it
	// may have landed without a sync) and at the end; states that differ only by syncs are
	// checked once.
	var points []int
	l1Writes := 0
	for i, op := range log {
		if op.Kind != memstore.OpSync {
			points = append(points, i)
		}
		if writeTouches(op, l1off, 512) {
			l1Writes++
		}
	}
	if l1Writes == 0 {
		t.Fatal("the L1 entry was never written")
	}
	points = append(points, len(log))
	for _, at := range points {
		st := replayLog(t, base, log, at, nil)
		path := filepath.Join(dir, "crashed.qcow2")
		if err := st.WriteFile(path); err != nil {
			t.Fatal(err)
		}
		q := corpus.QemuCheck(t, path, corpus.CheckOptions{Human: true})
		code, out := q.ExitCode, q.Text
		if os.Getenv("QNBD_REVIEW_VERBOSE") != "" {
			t.Logf("crash at log %d: qemu-img check exit %d\n%s", at, code, out)
		}
		if code == 2 {
			lines := strings.Split(out, "\n")
			// What deleting the snapshot then makes of it: refcount 0 under a live reference.
			engQemu(t, "qemu-img", "snapshot", "-d", "s1", path)
			after := corpus.QemuCheck(t, path, corpus.CheckOptions{Human: true}).Text
			first := ""
			for _, l := range strings.Split(after, "\n") {
				if strings.Contains(l, "refcount=0 reference=1") {
					first = l
					break
				}
			}
			t.Fatalf("crash at log %d of %d (%v): qemu-img check exit 2 (corruption), e.g.\n%s\n...\n%s\nafter qemu-img snapshot -d s1: %q",
				at, len(log), log[min(at, len(log)-1)], strings.Join(lines[:min(3, len(lines))], "\n"), strings.Join(lines[max(0, len(lines)-8):], "\n"), first)
		}
		ours, err := CheckStorage(st, RepairNone)
		if err != nil || ours.Corruptions > 0 {
			t.Fatalf("crash at log %d: our check: %v, %d corruptions", at, err, ours.Corruptions)
		}
	}
}
