// Crash-state enumeration (docs/test-plan.md, crash enumeration): for every workload, every barrier of its
// write log, the durable prefix plus random subsets (whole and torn) of the writes since the
// previous barrier, every subset of small windows and single-write reorderings of larger ones;
// each state gets every check of checkState.
package qcow2

import (
	"fmt"
	"iter"
	"maps"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// TestCrashStates proves "leaks are tolerable after a crash; corruption never is": for each
// state a crash could leave, qemu-img check exits 0 or 3 (2 only for a dirty lazy-refcounts
// image), our check agrees with it, our read-write open works and leaves an image qemu-img
// finds clean (after a leak repair when the state had leaks: QEMU does not repair those on open
// either, and no new ones may appear), every write followed by a completed flush reads back
// exactly, no sector reads another sector's stamp, and the other sectors read as their old or
// one of their new contents.
//
// By default a sample of states is checked (every barrier site at least once, with and without
// pending writes, qemu-img on those and on every third other state, and everything after a
// workload's mark); -qcow2.crash.full checks every state with qemu-img, 8 random subsets per
// window whole and 8 torn, every subset of windows up to 5 writes, and single reorderings.
func TestCrashStates(t *testing.T) {
	var cnt cwCounters
	var mu sync.Mutex
	sites := map[string]int{}
	t.Cleanup(func() {
		names := make([]string, 0, len(sites))
		for s := range sites {
			names = append(names, s)
		}
		sort.Strings(names)
		var b strings.Builder
		for _, s := range names {
			fmt.Fprintf(&b, "\n\t%5d  %s", sites[s], s)
		}
		t.Logf("crash states: %d checked (%d dirty, %d with leaks), %d qemu-img checks, %d of our checks; states per barrier site:%s",
			cnt.states.Load(), cnt.dirty.Load(), cnt.leaky.Load(), cnt.qemuChecks.Load(), cnt.ourChecks.Load(), b.String())
	})
	for _, w := range workloads() {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			got := runCrashStates(t, w, &cnt)
			mu.Lock()
			for s, n := range got {
				sites[s] += n
			}
			mu.Unlock()
		})
	}
}

// runCrashStates runs one workload with a logging store and checks the crash states of its log.
// It returns how many states it checked per barrier site.
func runCrashStates(t *testing.T, w *cwWorkload, cnt *cwCounters) map[string]int {
	env := buildEnv(t, w)
	st := env.base.Clone()
	tap := newTap(nil, true)
	st.Inject(tap)
	st.StartLog()
	img, err := env.open(st, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newRunner(img, tap, env.firstGen)
	r.snaps = maps.Clone(env.snapGens)
	w.run(r)
	r.close()
	env.snapGens = r.snaps
	ops := r.snapshotOps()
	for _, o := range ops {
		if o.err != nil {
			t.Fatalf("workload: %v", o)
		}
	}
	env.ops = ops
	st.Inject(nil)
	log := st.Log()
	if tap.length() != len(log) {
		t.Fatalf("the tap counted %d logged operations, the store logged %d", tap.length(), len(log))
	}
	after, err := ReadHeader(st.Reopen())
	if err != nil {
		t.Fatal(err)
	}
	if w.sanity != nil {
		if err := w.sanity(&env.hdr, after); err != nil {
			t.Fatalf("the workload did not do what it is for: %v", err)
		}
	}
	m := env.model(ops)
	// After the clean close: everything exact, nothing leaked.
	if err := env.checkState(st.Clone(), m.finalExpect(), cwStateOpts{label: "final", qemu: true}, cnt); err != nil {
		t.Fatalf("after a clean close: %v (kept at %s)", err, env.keepState(t, st, w.name+"-final"))
	}

	syncs := st.SyncPoints()
	durableAt := func(i int) int { return durablePrefix(syncs, i) }
	// Random subsets (whole, then torn) of every window, and every subset of small windows.
	variants, budget, maxK := 1, 24, 0
	if crashRaceBuild {
		budget = 8
	}
	if *crashFull {
		variants, budget, maxK = 8, 0, 5
	}
	// Count the states to spread the sample over the whole log.
	total, pending := 0, 0
	for i := 0; i <= len(log); i++ {
		if i < len(log) && log[i].Kind != memstore.OpSync {
			pending++
			continue
		}
		total++
		if pending > 0 {
			total += 2 * variants
		}
		if pending > 0 && pending <= maxK {
			total += 1<<pending - 1
		}
		pending = 0
	}
	// Every subset of small windows, and each write alone ahead of or behind the others in
	// larger ones: everywhere with -qcow2.crash.full, after the workload's mark by default.
	subsetK, oneFrom := maxK, -1
	if *crashFull {
		oneFrom = 0
	}
	if r.mark > 0 {
		subsetK = max(maxK, 4)
		if oneFrom < 0 {
			oneFrom = r.mark
		}
	}
	stride := 1
	if budget > 0 && total > budget {
		stride = total / budget
	}
	type key struct {
		site    string
		pending bool
	}
	seen := map[key]bool{}
	perSite := map[string]int{}
	idx, taken, failures := 0, 0, 0
	sources := []iter.Seq2[memstore.CrashPoint, *memstore.Store]{
		st.CrashStates(variants, uint64(len(w.name))*1000, memstore.CrashConfig{}),
		st.CrashStates(variants, uint64(len(w.name))*1000+1, memstore.CrashConfig{Torn: true}),
		subsetStates(st, subsetK, oneFrom),
	}
	for pass, states := range sources {
		for pt, cs := range states {
			if pass == 1 && pt.Variant == 0 {
				continue // the same state as in the first pass
			}
			site, ok := tap.siteAt[pt.Barrier]
			if !ok {
				site = "(end of log)"
			}
			k := key{site, pt.Variant > 0}
			first := !seen[k]
			seen[k] = true
			idx++
			marked := pass == 2 && r.mark > 0 && pt.Barrier >= r.mark
			if !*crashFull && !first && !marked && idx%stride != 0 {
				continue
			}
			taken++
			o := cwStateOpts{
				label:   fmt.Sprintf("barrier %d/%d variant %d %s", pt.Barrier, len(log), pt.Variant, [...]string{"whole", "torn", "subset"}[pass]),
				qemu:    *crashFull || first || taken%3 == 0,
				leaksOK: true,
			}
			perSite[site]++
			exp := m.crashExpect(durableAt(pt.Barrier), pt.Barrier)
			if err := env.checkState(cs, exp, o, cnt); err != nil {
				failures++
				path := env.keepState(t, cs, fmt.Sprintf("%s-b%d-v%d-p%d", w.name, pt.Barrier, pt.Variant, pass))
				t.Errorf("%s: crash at %s (sync site %s): %v\n\tstate kept at %s\n\toperations: %v", w.name, o.label, site, err, path, ops)
				if failures >= 3 {
					t.FailNow()
				}
			}
		}
	}
	t.Logf("%s: %d log entries, %d syncs, %d states of %d checked", w.name, len(log), len(syncs), taken, idx)
	return perSite
}
