// Review helper: deterministic crash states built from a memstore log (every logged mutation up
// to a point reaches the disk except the ones a test names).
package qcow2

import (
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// rvReplay returns base with the mutations of log[:upto] applied, except those drop rejects:
// the state a crash at log position upto leaves when exactly the dropped (unsynced) writes
// were lost. The caller must make sure no Sync lies between a dropped write and upto, or the
// state is not one a crash can leave; rvNoSyncBetween checks that.
func rvReplay(t testing.TB, base *memstore.Store, log []memstore.Op, upto int, drop func(i int, op memstore.Op) bool) *memstore.Store {
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
