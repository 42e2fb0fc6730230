// Review helpers: questions about the order of operations in a memstore log, for the review_* tests.
package qcow2

import (
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// rvNoSyncBetween reports whether no Sync was logged in log[from+1:to].
func rvNoSyncBetween(log []memstore.Op, from, to int) bool {
	for _, op := range log[from+1 : to] {
		if op.Kind == memstore.OpSync {
			return false
		}
	}
	return true
}

// rvWriteTouches reports whether op is a write touching [off, off+n).
func rvWriteTouches(op memstore.Op, off, n int64) bool {
	return op.Kind == memstore.OpWrite && op.Off < off+n && off < op.Off+op.Len
}

// rvDataThenL2 finds, in log, the first write of the data cluster that guest offset target
// now maps to and the first write after it of the L2 table that maps target (cs is the
// cluster size), with the two host offsets; the test fails if either write is missing.
func rvDataThenL2(t *testing.T, img *Image, log []memstore.Op, target uint64, cs int64) (host, l2off int64, dataAt, l2At int) {
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
		if dataAt < 0 && rvWriteTouches(op, host, cs) {
			dataAt = i
		}
		if dataAt >= 0 && l2At < 0 && rvWriteTouches(op, l2off, cs) {
			l2At = i
		}
	}
	if dataAt < 0 || l2At < 0 {
		t.Fatalf("log has no data write at %#x (%d) or L2 write at %#x after it (%d)", host, dataAt, l2off, l2At)
	}
	return host, l2off, dataAt, l2At
}
