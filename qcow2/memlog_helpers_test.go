// Helpers over a memstore log: questions about the order of operations in it, and
// deterministic crash states replayed from it (every logged mutation up to a point reaches the
// disk except the ones a test names).
package qcow2

import (
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// noSyncBetween reports whether no Sync was logged in log[from+1:to].
func noSyncBetween(log []memstore.Op, from, to int) bool {
	for _, op := range log[from+1 : to] {
		if op.Kind == memstore.OpSync {
			return false
		}
	}
	return true
}

// writeTouches reports whether op is a write touching [off, off+n).
func writeTouches(op memstore.Op, off, n int64) bool {
	return op.Kind == memstore.OpWrite && op.Off < off+n && off < op.Off+op.Len
}

// dataThenL2 finds, in log, the first write of the data cluster that guest offset target
// now maps to and the first write after it of the L2 table that maps target (cs is the
// cluster size), with the two host offsets; the test fails if either write is missing.
func dataThenL2(t *testing.T, img *Image, log []memstore.Op, target uint64, cs int64) (host, l2off int64, dataAt, l2At int) {
	t.Helper()
	ext, err := img.Map(GuestOffset(target), uint64(cs))
	if err != nil || ext[0].Kind != kindData {
		t.Fatalf("after write: %v %+v", err, ext)
	}
	host = int64(ext[0].Host)
	img.mu.Lock()
	l2off = int64(img.l1.entries[GuestOffset(target).l1Index(img.geo)].l2Offset())
	img.mu.Unlock()
	dataAt, l2At = -1, -1
	for i, op := range log {
		if dataAt < 0 && writeTouches(op, host, cs) {
			dataAt = i
		}
		if dataAt >= 0 && l2At < 0 && writeTouches(op, l2off, cs) {
			l2At = i
		}
	}
	if dataAt < 0 || l2At < 0 {
		t.Fatalf("log has no data write at %#x (%d) or L2 write at %#x after it (%d)", host, dataAt, l2off, l2At)
	}
	return host, l2off, dataAt, l2At
}

// replayLog returns base with the mutations of log[:upto] applied, except those drop rejects:
// the state a crash at log position upto leaves when exactly the dropped (unsynced) writes
// were lost. The caller must make sure no Sync lies between a dropped write and upto, or the
// state is not one a crash can leave; noSyncBetween checks that.
func replayLog(t testing.TB, base *memstore.Store, log []memstore.Op, upto int, drop func(i int, op memstore.Op) bool) *memstore.Store {
	t.Helper()
	st := base.Clone()
	for i, op := range log[:upto] {
		if drop != nil && drop(i, op) {
			continue
		}
		var err error
		switch op.Kind {
		case memstore.OpWrite:
			_, err = st.WriteAt(op.Data, op.Off)
		case memstore.OpTruncate:
			err = st.Truncate(op.Off)
		case memstore.OpPunchHole:
			err = st.PunchHole(op.Off, op.Len)
		}
		if err != nil {
			t.Fatalf("replay op %d (%v): %v", i, op, err)
		}
	}
	return st.Clone()
}
