package qcow2

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// ccRepairScenarios are the scenarios whose RepairAll writes something: a rebuild (the dirty
// ones, refcount0, l2-to-refblock, refblock-unaligned, bitmap-refcount0), in-place refcount
// fixes (leaked, cross-link), COPIED fixes (copied-l2-clear).
var ccRepairScenarios = map[string]bool{
	"dirty-lazy": true, "refcount0": true, "l2-to-refblock": true, "refblock-unaligned": true,
	"leaked": true, "cross-link": true, "copied-l2-clear": true,
	"dirty-lazy-512-many-refblocks": true, "dirty-lazy-snapshot": true, "bitmap-refcount0": true,
}

// TestRepairCrashSafety interrupts RepairAll at every point of its write log (each Sync, and
// between them with unsynced writes dropped, kept, or kept at random and torn at 512-byte
// sectors) and requires that every state a crash can leave has a valid header, is repaired by
// a second RepairAll to a clean image, and holds the original guest data (qemu-img compare).
func TestRepairCrashSafety(t *testing.T) {
	t.Parallel()
	for _, sc := range ccScenarios() {
		if !ccRepairScenarios[sc.name] {
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			orig := sc.build(t, dir)
			st := storeOf(t, orig)
			st.StartLog()
			res, err := CheckStorage(st, RepairAll)
			if err != nil || res.ExitCode() != 0 {
				t.Fatalf("RepairAll: %v %+v", err, res)
			}
			log := st.Log()
			if len(st.SyncPoints()) == 0 || log[len(log)-1].Kind != memstore.OpSync {
				t.Fatalf("repair did not end with a sync: %v", log)
			}
			rng := rand.New(rand.NewPCG(1, uint64(len(log))))
			configs := []memstore.CrashConfig{
				{Policy: memstore.DropUnsynced},
				{Policy: memstore.KeepUnsynced},
				{Policy: memstore.KeepRandom, Torn: true},
			}
			states := 0
			for n := 0; n <= len(log); n++ {
				for ci, cfg := range configs {
					cs, err := st.CrashAt(n, rng, cfg)
					if err != nil {
						t.Fatal(err)
					}
					what := fmt.Sprintf("crash after %d/%d ops (%v), config %d", n, len(log), opName(log, n), ci)
					if _, err := ReadHeader(cs); err != nil {
						t.Fatalf("%s: header unreadable: %v", what, err)
					}
					res, err := CheckStorage(cs, RepairAll)
					if err != nil || res.ExitCode() != 0 {
						t.Fatalf("%s: second RepairAll: %v %q", what, err, res.Messages)
					}
					// qemu-img on a sample: every sync point, and the final state.
					if cfg.Policy == memstore.DropUnsynced || n == len(log) {
						p := filepath.Join(dir, fmt.Sprintf("crash-%d-%d.qcow2", n, ci))
						if err := cs.WriteFile(p); err != nil {
							t.Fatal(err)
						}
						if q := corpus.QemuCheck(t, p, corpus.CheckOptions{}); q.ExitCode != 0 {
							t.Fatalf("%s: qemu-img check after repair: %d\n%s", what, q.ExitCode, q.Stderr)
						}
						if !ccSameGuest(t, orig, p) {
							t.Fatalf("%s: guest data changed", what)
						}
					}
					states++
				}
			}
			t.Logf("%d crash states checked; repair log: %v", states, log)
		})
	}
}

func opName(log []memstore.Op, n int) string {
	if n == 0 {
		return "nothing done"
	}
	return "last " + log[n-1].String()
}

// TestRepairIOErrors fails each write and each sync of RepairAll in turn (EIO) and requires an
// error, no panic, and an image that a RepairAll without faults then repairs, guest data
// intact.
func TestRepairIOErrors(t *testing.T) {
	t.Parallel()
	for _, sc := range ccScenarios() {
		if sc.name != "dirty-lazy" && sc.name != "cross-link" && sc.name != "l2-to-refblock" {
			continue
		}
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			orig := sc.build(t, dir)
			probe := storeOf(t, orig)
			if _, err := CheckStorage(probe, RepairAll); err != nil {
				t.Fatal(err)
			}
			writes, syncs := probe.Count(memstore.OpWrite), probe.Count(memstore.OpSync)
			for _, kind := range []memstore.OpKind{memstore.OpWrite, memstore.OpSync} {
				total := writes
				if kind == memstore.OpSync {
					total = syncs
				}
				for nth := 1; nth <= total; nth++ {
					st := storeOf(t, orig)
					st.Inject(&memstore.Rule{Kind: kind, Nth: nth})
					res, err := CheckStorage(st, RepairAll)
					if err == nil && res.ExitCode() == 0 {
						// The failed operation was one the repair could do without (a
						// second pass fixes what the first left), but it must say so.
						t.Logf("%v #%d failed; repair still completed: %q", kind, nth, res.Messages)
					}
					st.Inject(nil)
					res, err = CheckStorage(st, RepairAll)
					if err != nil || res.ExitCode() != 0 {
						t.Fatalf("%v #%d failed, then RepairAll: %v %q", kind, nth, err, res.Messages)
					}
					if nth == total {
						p := filepath.Join(dir, fmt.Sprintf("eio-%v-%d.qcow2", kind, nth))
						if err := st.WriteFile(p); err != nil {
							t.Fatal(err)
						}
						if !ccSameGuest(t, orig, p) {
							t.Fatalf("%v #%d: guest data changed", kind, nth)
						}
					}
				}
			}
		})
	}
}

// TestCheckReadErrors fails each read of a check in turn (EIO) and requires that the check
// never calls the image clean: it returns an error or counts check errors.
func TestCheckReadErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := ccNewImage(t, dir, "t.qcow2", "cluster_size=4k", "16M", "write -P 1 0 64k", "write -P 2 1M 8k")
	ccRun(t, "qemu-img", "snapshot", "-c", "s1", p)
	ccRun(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b0")
	ccIO(t, p, "write -P 3 0 4k", "write -P 4 2M 4k")
	probe := storeOf(t, p)
	if res, err := CheckStorage(probe, RepairNone); err != nil || !res.Clean() {
		t.Fatalf("baseline: %v %+v", err, res)
	}
	reads := probe.Count(memstore.OpRead)
	if reads < 5 {
		t.Fatalf("only %d reads", reads)
	}
	for nth := 1; nth <= reads; nth++ {
		st := storeOf(t, p)
		rule := &memstore.Rule{Kind: memstore.OpRead, Nth: nth}
		st.Inject(rule)
		res, err := CheckStorage(st, RepairNone)
		if rule.Seen() < nth {
			t.Fatalf("read #%d never happened (%d reads)", nth, rule.Seen())
		}
		if err == nil && res.CheckErrors == 0 {
			t.Fatalf("read #%d failed, yet the check completed without check errors: %+v", nth, res)
		}
		if err == nil && res.ExitCode() != 1 {
			t.Fatalf("read #%d failed: exit %d", nth, res.ExitCode())
		}
	}
	t.Logf("%d reads failed one at a time", reads)
}
