// Review helpers: questions about the order of operations in a memstore log, for the review_* tests.
package qcow2

import "github.com/qnbd/qnbd/qcow2/internal/memstore"

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
