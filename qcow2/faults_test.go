// Error injection (docs/test-plan.md, error injection): every workload, with its k-th ReadAt, WriteAt,
// Sync, Truncate or PunchHole failing with EIO or ENOSPC, once or from then on.
package qcow2

import (
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// faultCase is one injected failure.
type faultCase struct {
	kind       memstore.OpKind
	nth        int
	errno      syscall.Errno
	persistent bool
	// match, if set, restricts the fault to the operations it accepts (nth counts among
	// them); what names it; op is the index of the request the fault must hit (pinned cases).
	match func(env *cwEnv, op memstore.Op) bool
	what  string
	op    int
}

func (c faultCase) String() string {
	mode := "once"
	if c.persistent {
		mode = "persistent"
	}
	return fmt.Sprintf("%s%s#%d-%s-%s", c.kind, c.what, c.nth, errnoName(c.errno), mode)
}

func errnoName(e syscall.Errno) string {
	if e == syscall.ENOSPC {
		return "ENOSPC"
	}
	return "EIO"
}

// faultStats are the totals of a sweep.
type faultStats struct {
	runs, fired, reported, absorbed, closeFailed, leakyAfterOnce atomic.Int64
	mu                                                           sync.Mutex
	absorbedBy                                                   map[string]int // fault kind / operation -> count
}

func (s *faultStats) absorb(what string) {
	s.absorbed.Add(1)
	s.mu.Lock()
	s.absorbedBy[what]++
	s.mu.Unlock()
}

// faultWatchdog bounds one run: a run that takes longer is a deadlock.
const faultWatchdog = 10 * time.Second

// TestFaultSweep proves "bad storage gives a clear error and loses no acknowledged data": for
// every workload, every operation kind, every k up to the number of such operations the
// workload performs (a sample by default; all with -qcow2.crash.full), EIO and ENOSPC, once and
// persistent:
//
//   - every failed request returns an error matching the injected errno, never ErrCorrupt, and
//     the image is never marked corrupt;
//   - the engine neither panics nor deadlocks (a watchdog per run);
//   - after Close (which may fail), the file as it is and the file as a power failure right then
//     would leave it are consistent (0 corruptions in qemu-img check and ours, which agree; leaks
//     only if the failure persisted or Close failed), reopen read-write, and hold every
//     acknowledged write (exactly, where a Close or Flush that succeeded covers it; as the old
//     or the new contents otherwise).
func TestFaultSweep(t *testing.T) {
	var st faultStats
	st.absorbedBy = map[string]int{}
	var cnt cwCounters
	t.Cleanup(func() {
		var keys []string
		for k, n := range st.absorbedBy {
			keys = append(keys, fmt.Sprintf("%s: %d", k, n))
		}
		sort.Strings(keys)
		t.Logf("fault runs: %d (%d fired; failed requests %d; faults absorbed without a failed request %d; Close failed %d); "+
			"states checked %d, qemu-img checks %d, our checks %d; absorbed by kind: %s",
			st.runs.Load(), st.fired.Load(), st.reported.Load(), st.absorbed.Load(), st.closeFailed.Load(),
			cnt.states.Load(), cnt.qemuChecks.Load(), cnt.ourChecks.Load(), strings.Join(keys, ", "))
	})
	for _, w := range workloads() {
		if w.snapOps {
			// Snapshot operations do not yet roll back what a failed step did (raised
			// refcounts leak until check -r leaks): crash-tested only (docs/snapshots.md).
			continue
		}
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			runFaultSweep(t, w, &st, &cnt)
		})
	}
}

// faultPinned are cases every run includes: the ones that found engine bugs.
var faultPinned = map[string][]faultCase{
	// A failed write while copying an L2 table shared with a snapshot leaked the shared table
	// (its count never dropped, although the switch completed at the next flush).
	"snapshot": {{kind: memstore.OpWrite, nth: 1, errno: syscall.EIO, op: -1}, {kind: memstore.OpWrite, nth: 2, errno: syscall.ENOSPC, op: -1}},
	// After the L1 write of that switch failed, a batch of frees (maxPendingFrees reached)
	// dropped refcounts of clusters the old table, still in the L1 on disk, references: a
	// crash before the next L1 write left refcounts below the references (found by review).
	"snapshot-frees": {{kind: memstore.OpWrite, nth: 2, errno: syscall.EIO, match: l1FirstSector, what: "(L1 sector 0)", op: 2}},
	// A failed refcount read while freeing (here the old reftable after its growth) leaked
	// the cluster for good.
	"reftable-growth": {{kind: memstore.OpRead, nth: 59, errno: syscall.EIO, op: -1}},
	// A failed header write when switching to a grown L1 table left the new table allocated
	// and the image refusing writes, although the file still held the old header.
	"l1-growth": {{kind: memstore.OpWrite, nth: 7, errno: syscall.EIO, op: -1}, {kind: memstore.OpWrite, nth: 18, errno: syscall.ENOSPC, op: -1}},
}

// l1FirstSector matches writes to the first sector of the active L1 table.
func l1FirstSector(env *cwEnv, op memstore.Op) bool {
	off := int64(env.hdr.L1TableOffset)
	return op.Off < off+512 && off < op.Off+op.Len
}

func runFaultSweep(t *testing.T, w *cwWorkload, stats *faultStats, cnt *cwCounters) {
	env := buildEnv(t, w)
	ref, err := env.faultRun(t, nil, stats, cnt, 0)
	if err != nil {
		t.Fatalf("reference run: %v", err)
	}
	kinds := []memstore.OpKind{memstore.OpWrite, memstore.OpRead, memstore.OpSync, memstore.OpTruncate, memstore.OpPunchHole}
	failures, runs := 0, 0
	for _, c := range faultPinned[w.name] {
		runs++
		if _, err := env.faultRun(t, &c, stats, cnt, runs); err != nil {
			failures++
			t.Errorf("%s: pinned %s: %v", w.name, c, err)
		}
	}
	for _, kind := range kinds {
		n := ref[kind]
		for ci, errno := range []syscall.Errno{syscall.EIO, syscall.ENOSPC} {
			for pi, persistent := range []bool{false, true} {
				for _, k := range faultSample(n, int(kind)*4+ci*2+pi) {
					c := faultCase{kind: kind, nth: k, errno: errno, persistent: persistent, op: -1}
					runs++
					if _, err := env.faultRun(t, &c, stats, cnt, runs); err != nil {
						failures++
						if failures <= 5 {
							t.Errorf("%s: %s: %v", w.name, c, err)
						} else {
							t.Errorf("%s: %s: %.200s", w.name, c, err)
						}
					}
				}
			}
		}
	}
	t.Logf("%s: %d reads, %d writes, %d syncs, %d truncates, %d hole punches; %d fault runs, %d failed", w.name,
		ref[memstore.OpRead], ref[memstore.OpWrite], ref[memstore.OpSync], ref[memstore.OpTruncate], ref[memstore.OpPunchHole], runs, failures)
}

// faultSample picks the k to fail among n operations: all of them with -qcow2.crash.full, else
// one per combination, spread over the run.
func faultSample(n, salt int) []int {
	if n == 0 {
		return nil
	}
	if *crashFull {
		ks := make([]int, n)
		for i := range ks {
			ks[i] = i + 1
		}
		return ks
	}
	if crashRaceBuild && (salt/4+salt/2+salt)%3 != 0 {
		return nil // under the race detector: a third of the combinations (kind x errno x mode)
	}
	return []int{1 + (salt*7919+n/3)%n}
}

// faultRun runs the workload with the fault c (none: the reference run, which returns the
// operation counts) and checks what it left.
func (env *cwEnv) faultRun(t *testing.T, c *faultCase, stats *faultStats, cnt *cwCounters, run int) ([5]int, error) {
	var rule *memstore.Rule
	var inj memstore.Injector
	if c != nil {
		rule = &memstore.Rule{Kind: c.kind, Nth: c.nth, Err: c.errno, Persistent: c.persistent}
		if c.match != nil {
			rule.Match = func(op memstore.Op) bool { return c.match(env, op) }
		}
		inj = rule
	}
	tap := newTap(inj, false)
	st := env.base.Clone()
	img, err := env.open(st, tap)
	if err != nil {
		return [5]int{}, err
	}
	st.StartLog()
	st.Inject(tap)
	tap.armed.Store(true)
	r := newRunner(img, tap, env.firstGen)
	done := make(chan string, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Sprintf("panic: %v\n%s", p, debug.Stack())
				return
			}
			done <- ""
		}()
		env.w.run(r)
		r.close()
	}()
	select {
	case msg := <-done:
		if msg != "" {
			return [5]int{}, errors.New(msg)
		}
	case <-time.After(faultWatchdog):
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 2)
		return [5]int{}, fmt.Errorf("deadlock: the run did not finish in %v\n%s", faultWatchdog, b.String())
	}
	tap.armed.Store(false)
	st.Inject(nil)
	counts := tap.counts()
	ops := r.snapshotOps()
	if c == nil {
		for _, o := range ops {
			if o.err != nil {
				return counts, fmt.Errorf("reference run: %v", o)
			}
		}
		return counts, nil
	}
	stats.runs.Add(1)
	fires := tap.fires()
	if len(fires) == 0 {
		return counts, nil // this run did fewer operations of the kind (concurrent workload)
	}
	stats.fired.Add(1)
	if c.op >= 0 && fires[0].op != c.op {
		return counts, fmt.Errorf("pinned fault hit request %d, not %d: the pin is stale (operations %v)", fires[0].op, c.op, ops)
	}
	fail := func(format string, args ...any) ([5]int, error) {
		path := env.keepState(t, st, fmt.Sprintf("%s-fault-%s", env.w.name, c))
		return counts, fmt.Errorf(format+"\n\tstate kept at %s\n\toperations: %v", append(args, path, ops)...)
	}

	// Errors: the injected class, never corruption.
	var closeErr error
	for _, o := range ops {
		if o.kind == cwClose {
			closeErr = o.err
		}
		if o.err == nil {
			continue
		}
		stats.reported.Add(1)
		if errors.Is(o.err, ErrOutOfRange) && o.b > o.sizePre {
			continue // beyond the end of a disk whose resize failed
		}
		if !errors.Is(o.err, c.errno) {
			return fail("%v: the error does not match %s", o, errnoName(c.errno))
		}
		if errors.Is(o.err, ErrCorrupt) {
			return fail("%v: an I/O error reported as corruption", o)
		}
	}
	if closeErr != nil {
		stats.closeFailed.Add(1)
	}
	// A fault that no request reported: allowed where the request's outcome is still right,
	// which the data checks below establish.
	for _, f := range fires {
		if !env.w.concurrent && f.op >= 0 && f.op < len(ops) && ops[f.op].err == nil {
			stats.absorb(fmt.Sprintf("%s in %s", f.kind, ops[f.op].kind))
		}
	}
	img.mu.Lock()
	corrupt := img.corrupt
	img.mu.Unlock()
	if corrupt != nil {
		return fail("the engine marked the image corrupt for an I/O error: %v", corrupt)
	}

	m := env.model(ops)
	qemu := *crashFull || run%2 == 0
	// The file as the process left it (the page cache survives).
	cur := st.Clone()
	exp := m.finalExpect()
	if closeErr != nil {
		exp = m.crashExpect(math.MaxInt, math.MaxInt)
	}
	leaksOK := c.persistent || closeErr != nil
	if err := env.checkState(cur, exp, cwStateOpts{label: "as left", qemu: qemu, leaksOK: leaksOK}, cnt); err != nil {
		if !leaksOK {
			if res, cerr := CheckStorage(cur, RepairNone); cerr == nil && res.Leaks > 0 && res.Corruptions == 0 {
				stats.leakyAfterOnce.Add(1)
			}
		}
		return fail("the file as left after Close (err %v): %v", closeErr, err)
	}
	// The file as a power failure right after Close would leave it.
	log := st.Log()
	durable := 0
	if pts := st.SyncPoints(); len(pts) > 0 {
		durable = pts[len(pts)-1]
	}
	crashed := st.CrashClone(nil, memstore.CrashConfig{Policy: memstore.DropUnsynced})
	dexp := m.crashExpect(durable, len(log))
	if err := env.checkState(crashed, dexp, cwStateOpts{label: "durable", qemu: qemu && run%4 == 0, leaksOK: true}, cnt); err != nil {
		path := env.keepState(t, crashed, fmt.Sprintf("%s-fault-%s-durable", env.w.name, c))
		return fail("the durable state after Close (err %v): %v (kept at %s)", closeErr, err, path)
	}
	// Crashes from the fault on: the durable prefix at every later barrier (a crash while the
	// engine recovers from the fault, or works on past it).
	syncs := st.SyncPoints()
	var after []int // barriers (syncs, and the end of the log) from the fault on
	for _, p := range append(syncs, len(log)+1) {
		if b := p - 1; b >= fires[0].log {
			after = append(after, b)
		}
	}
	pick := map[int]bool{}
	switch limit := 3; {
	case *crashFull || c.op >= 0 || len(after) <= limit:
		for _, b := range after {
			pick[b] = true
		}
	case crashRaceBuild:
		pick[after[0]] = true
	default:
		pick[after[0]], pick[after[len(after)/2]], pick[after[len(after)-1]] = true, true, true
	}
	n := 0
	for pt, cs := range st.CrashStates(0, 0, memstore.CrashConfig{}) {
		if !pick[pt.Barrier] {
			continue
		}
		n++
		o := cwStateOpts{label: fmt.Sprintf("crash at barrier %d (after the fault)", pt.Barrier), qemu: qemu && n%8 == 1, leaksOK: true}
		if err := env.checkState(cs, m.crashExpect(durablePrefix(syncs, pt.Barrier), pt.Barrier), o, cnt); err != nil {
			path := env.keepState(t, cs, fmt.Sprintf("%s-fault-%s-b%d", env.w.name, c, pt.Barrier))
			return fail("%s: %v (kept at %s)", o.label, err, path)
		}
	}
	if c.kind == memstore.OpSync {
		// Linux may drop the dirty pages a failed fsync was writing and report success for the
		// next one (QEMU's file-posix therefore fails every flush after one failed, the
		// page_cache_inconsistent latch). In that model, whatever the engine acknowledged as
		// flushed must still be there, and the metadata consistent.
		lost, err := fsyncLostState(st, log, fires)
		if err != nil {
			return counts, err
		}
		if err := env.checkState(lost, dexp, cwStateOpts{label: "durable, fsync errors lose pages", qemu: qemu, leaksOK: true}, cnt); err != nil {
			path := env.keepState(t, lost, fmt.Sprintf("%s-fault-%s-fsynclost", env.w.name, c))
			return fail("the durable state when a failed fsync loses the pages it was writing: %v (kept at %s)", err, path)
		}
	}
	return counts, nil
}

// fsyncLostState rebuilds the durable state from the log when every mutation pending at a
// failed Sync is lost for good (until written again), as Linux's page cache may do.
func fsyncLostState(st *memstore.Store, log []memstore.Op, fires []cwFire) (*memstore.Store, error) {
	out, err := st.CrashAt(0, nil, memstore.CrashConfig{Policy: memstore.DropUnsynced})
	if err != nil {
		return nil, err
	}
	failedAt := map[int]bool{}
	for _, f := range fires {
		if f.kind == memstore.OpSync {
			failedAt[f.log] = true
		}
	}
	var pending []memstore.Op
	for i := 0; i <= len(log); i++ {
		if failedAt[i] {
			pending = pending[:0]
		}
		if i == len(log) {
			break
		}
		op := log[i]
		if op.Kind != memstore.OpSync {
			pending = append(pending, op)
			continue
		}
		for _, p := range pending {
			var err error
			switch p.Kind {
			case memstore.OpWrite:
				_, err = out.WriteAt(p.Data, p.Off)
			case memstore.OpTruncate:
				err = out.Truncate(p.Off)
			case memstore.OpPunchHole:
				err = out.PunchHole(p.Off, p.Len)
			}
			if err != nil {
				return nil, err
			}
		}
		pending = pending[:0]
	}
	return out, nil
}
