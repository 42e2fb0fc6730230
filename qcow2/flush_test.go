// Flush order, data before L2: an L2 table holding a new entry is never written before the
// data sync that entry needs, even when a batch of frees runs inside linkWrite.
package qcow2

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// TestL2TableWaitsForDataSyncLazyRefcounts: linkWrite sets the new L2 entry, then frees the
// old one (freeEntry -> freeClusters); when that free is the maxPendingFrees-th pending one,
// applyFrees runs at once and flushes the L2 cache, with the new entry in it, before linkWrite
// has marked the table as needing a data sync first (publishData). With lazy refcounts (no refcount dependency whose sync
// would cover the data) the L2 table is written with no fsync after the cluster's data: a
// crash then leaves an L2 entry pointing at a cluster whose data (including the copy-on-write
// of the untouched part of the cluster) never reached the disk.
func TestL2TableWaitsForDataSyncLazyRefcounts(t *testing.T) {
	const cs = 4096
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "cluster_size=4k,lazy_refcounts=on", "16M")
	target := uint64(8 << 20)
	engQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 8M", "-c", "write -c -P 0x22 8M 4k", p)
	s := storeOf(t, p)
	img, err := OpenStorage(s, dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	if ext, err := img.Map(GuestOffset(target), cs); err != nil || ext[0].Kind != kindCompressed {
		t.Fatalf("setup: %v %+v", err, ext)
	}
	// maxPendingFrees-1 frees that cannot merge (every other cluster).
	for i := 0; i < maxPendingFrees-1; i++ {
		if err := img.Discard(GuestOffset(uint64(2*i)*cs), cs); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(img.deferred); n != maxPendingFrees-1 {
		t.Fatalf("setup: %d frees pending, want %d", n, maxPendingFrees-1)
	}
	base := s.Clone()
	s.StartLog()
	// Copy-on-write over the compressed cluster: new cluster, old one freed (the 1024th).
	if _, err := img.WriteAt(bytes.Repeat([]byte{0x33}, 512), int64(target)); err != nil {
		t.Fatal(err)
	}
	log := s.Log()
	host, l2off, dataAt, l2At := dataThenL2(t, img, log, target, cs)
	if !noSyncBetween(log, dataAt, l2At) {
		t.Logf("data at log %d, L2 table at log %d, with a sync between: ordering holds", dataAt, l2At)
		return
	}
	t.Errorf("the L2 table at %#x (log %d) was written with no sync after the data of cluster %#x (log %d)", l2off, l2At, host, dataAt)

	// The crash state: everything up to and including the L2 write reached the disk, except
	// the data write (allowed: no sync in between).
	st := replayLog(t, base, log, l2At+1, func(i int, _ memstore.Op) bool { return i == dataAt })
	path := filepath.Join(dir, "crashed.qcow2")
	if err := st.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	q := corpus.QemuCheck(t, path, corpus.CheckOptions{Human: true})
	code, out := q.ExitCode, q.Text
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "Leaked cluster") {
			keep = append(keep, l)
		}
	}
	t.Logf("qemu-img check of the crash state: exit %d (leak lines left out)\n%s", code, strings.Join(keep, "\n"))
	ro, err := OpenStorage(st, dir, OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("read-only open of the crash state: %v", err)
	}
	defer ro.Close()
	got := make([]byte, cs)
	if _, err := ro.ReadAt(got, int64(target)); err != nil {
		t.Fatalf("crash state: reading the cluster fails: %v", err)
	}
	old := bytes.Repeat([]byte{0x22}, cs)
	if !bytes.Equal(got[512:], old[512:]) {
		t.Fatalf("crash state: bytes the guest never wrote are lost: cluster reads %x... at 512, want 22", got[512:520])
	}
}

// TestL2TableWaitsForDataSyncAfterConcurrentFlush is the same ordering bug on an image with
// accurate refcounts: there, the refcount flush that the L2 cache's dependency forces before its
// first write also syncs the data (same file), but only while that dependency is still
// declared. A Flush that runs while the writer's data write is in flight writes the dirty L2
// tables, which clears the dependency (and the Flush covers every link made before its data
// sync). (Since batch reservation there is no such dependency at all; publishData alone
// orders the data before the table.) When the writer then links and its free is the maxPendingFrees-th, applyFrees
// writes the L2 table with the new entry and no sync after the data.
func TestL2TableWaitsForDataSyncAfterConcurrentFlush(t *testing.T) {
	const cs = 4096
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "cluster_size=4k", "16M")
	target := uint64(8 << 20)
	engQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 8M", "-c", "write -c -P 0x22 8M 4k", p)
	s := storeOf(t, p)
	ps := &pauseStore{Store: s}
	img, err := OpenStorage(ps, dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	// First-write header updates and cache warm-up out of the way.
	if _, err := img.WriteAt(bytes.Repeat([]byte{0x44}, cs), int64(target+cs)); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	base := s.Clone()
	s.StartLog()

	// A: copy-on-write over the compressed cluster, stopped at its data write.
	tr := ps.arm(memstore.OpWrite, false, nil)
	a := async(func() error {
		_, err := img.WriteAt(bytes.Repeat([]byte{0x33}, 512), int64(target))
		return err
	})
	select {
	case <-tr.hit:
	case <-time.After(30 * time.Second): // only a hang
		t.Fatal("the write never reached its data write")
	}
	// Meanwhile: a discard and a Flush (writes an L2 table: the refcount dependency is
	// cleared), then enough frees that A's own free applies the batch.
	if err := img.Discard(0, cs); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < maxPendingFrees; i++ {
		if err := img.Discard(GuestOffset(uint64(2*i)*cs), cs); err != nil {
			t.Fatal(err)
		}
	}
	close(tr.release)
	if err := <-a; err != nil {
		t.Fatal(err)
	}
	log := s.Log()
	host, l2off, dataAt, l2At := dataThenL2(t, img, log, target, cs)
	if noSyncBetween(log, dataAt, l2At) {
		st := replayLog(t, base, log, l2At+1, func(i int, _ memstore.Op) bool { return i == dataAt })
		ro, err := OpenStorage(st, dir, OpenOptions{ReadOnly: true})
		if err != nil {
			t.Fatalf("L2 table at %#x (log %d) written with no sync after the data of %#x (log %d); the crash state does not open: %v", l2off, l2At, host, dataAt, err)
		}
		defer ro.Close()
		got := make([]byte, cs)
		_, rerr := ro.ReadAt(got, int64(target))
		t.Fatalf("L2 table at %#x (log %d) written with no sync after the data of %#x (log %d); crash state reads: err %v, byte 512 = %#x (want 0x22)", l2off, l2At, host, dataAt, rerr, got[512])
	}
}
