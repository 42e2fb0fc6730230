// Deferred frees (mapping.go): a discarded cluster is handed out again only after the L2
// table that dropped its old mapping is on disk (a regression test from the code review).
package qcow2

import (
	"bytes"
	"testing"
)

// dataHost returns the host offset of the data cluster mapping guest offset off.
func dataHost(t *testing.T, img *Image, off uint64) HostOffset {
	t.Helper()
	ext, err := img.Map(GuestOffset(off), img.geo.ClusterSize())
	if err != nil || len(ext) != 1 || ext[0].Kind != kindData {
		t.Fatalf("map %#x: %v %+v", off, err, ext)
	}
	return ext[0].Host
}

// TestFreedClusterReusedOnlyAfterL2OnDisk: a discarded cluster is not handed out
// again before the next Flush (the decrement waits for the L2 flush), and when it is reused
// after it, the L2 table that cleared the old entry was written and synced before anything was
// written into the cluster for its new owner. Otherwise a crash could leave the old and the
// new guest cluster both mapped to it.
func TestFreedClusterReusedOnlyAfterL2OnDisk(t *testing.T) {
	const cs = 4096
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "cluster_size=4k", "8M")
	engQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 64k", p)
	s := storeOf(t, p)
	img, err := OpenStorage(s, dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	const g1, g2, g3 = 2 * cs, 4 << 20, 4<<20 + 64<<10
	h := dataHost(t, img, g1)
	img.mu.Lock()
	t1 := int64(img.l1.entries[GuestOffset(g1).l1Index(img.geo)].l2Offset())
	img.mu.Unlock()
	s.StartLog()
	if err := img.Discard(g1, cs); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{0x22}, cs)
	if _, err := img.WriteAt(data, g2); err != nil {
		t.Fatal(err)
	}
	if got := dataHost(t, img, g2); got == h {
		t.Fatalf("cluster %#x reused before the discard's L2 change was flushed", uint64(h))
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(data, g3); err != nil {
		t.Fatal(err)
	}
	if got := dataHost(t, img, g3); got != h {
		t.Fatalf("setup: the freed cluster %#x was not reused (got %#x)", uint64(h), uint64(got))
	}
	log := s.Log()
	firstH := -1
	for i, op := range log {
		if writeTouches(op, int64(h), cs) {
			firstH = i
			break
		}
	}
	if firstH < 0 {
		t.Fatal("no write into the reused cluster")
	}
	ok := false
	for i := 0; i < firstH && !ok; i++ {
		if writeTouches(log[i], t1, cs) && !noSyncBetween(log, i, firstH) {
			ok = true
		}
	}
	if !ok {
		t.Fatalf("the reused cluster was written (log %d) before the L2 table at %#x clearing its old entry was written and synced", firstH, t1)
	}
}
