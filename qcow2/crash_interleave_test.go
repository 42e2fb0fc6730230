// Deterministic interleavings (docs/test-plan.md, deterministic interleavings): a
// request is stopped at a storage operation (its copy-on-write read, its data write, after its
// data write and before its L2 entry is linked, a flush's data sync) while a second request
// races into the same cluster; the result is checked per sub-range, the image must check clean,
// and every crash state of the interleaving's write log gets checkState's checks.
package qcow2

import (
	"encoding/binary"
	"fmt"
	"runtime/pprof"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// pauseStore stops the first operation that matches its armed trap until the test releases it.
// It embeds the store, so hole punching and everything else pass through.
type pauseStore struct {
	*memstore.Store
	mu   sync.Mutex
	trap *pauseTrap
}

// pauseTrap is one stop: before (or, with after, just after) an operation of kind whose range
// match accepts.
type pauseTrap struct {
	kind    memstore.OpKind
	after   bool
	match   func(off int64, b []byte) bool
	hit     chan struct{}
	release chan struct{}
}

func (p *pauseStore) arm(kind memstore.OpKind, after bool, match func(off int64, b []byte) bool) *pauseTrap {
	t := &pauseTrap{kind: kind, after: after, match: match, hit: make(chan struct{}), release: make(chan struct{})}
	p.mu.Lock()
	p.trap = t
	p.mu.Unlock()
	return t
}

func (p *pauseStore) stop(kind memstore.OpKind, after bool, off int64, b []byte) {
	p.mu.Lock()
	t := p.trap
	if t == nil || t.kind != kind || t.after != after || (t.match != nil && !t.match(off, b)) {
		p.mu.Unlock()
		return
	}
	p.trap = nil
	p.mu.Unlock()
	close(t.hit)
	<-t.release
}

func (p *pauseStore) ReadAt(b []byte, off int64) (int, error) {
	p.stop(memstore.OpRead, false, off, b)
	n, err := p.Store.ReadAt(b, off)
	p.stop(memstore.OpRead, true, off, b)
	return n, err
}

func (p *pauseStore) WriteAt(b []byte, off int64) (int, error) {
	p.stop(memstore.OpWrite, false, off, b)
	n, err := p.Store.WriteAt(b, off)
	p.stop(memstore.OpWrite, true, off, b)
	return n, err
}

func (p *pauseStore) Sync() error {
	p.stop(memstore.OpSync, false, 0, nil)
	err := p.Store.Sync()
	p.stop(memstore.OpSync, true, 0, nil)
	return err
}

// raceEnv is the starting point of every pattern: 64 KiB clusters over a stamped backing file,
// the cluster at 2 MiB allocated (generation 2), everything else unallocated.
var raceWorkload = &cwWorkload{name: "race", opts: "cluster_size=64k", size: 4 * mib, backing: true,
	setup: func(r *cwRunner) {
		r.write(raceP, 64*kib)
		r.write(raceZ, 64*kib)
		r.zero(raceZ, 64*kib, false) // zero flag, host cluster kept (old bytes still in it)
	}}

const (
	raceX = 1 * mib          // an unallocated cluster with backing data
	raceY = 1*mib + 128*kib  // another one
	raceP = 2 * mib          // the allocated cluster
	raceW = 2*mib + 256*kib  // an unallocated cluster for writes after a discard
	raceZ = 2*mib + 512*kib  // a preallocated zero cluster: writes reuse it, no allocation
	cs64  = uint64(64 * kib) // the cluster size
	waitT = 100 * time.Millisecond
)

// raceRun is one pattern in progress.
type raceRun struct {
	t   *testing.T
	env *cwEnv
	st  *memstore.Store
	ps  *pauseStore // the image file
	bps *pauseStore // the backing file
	tap *cwTap
	img *Image
	r   *cwRunner
}

func newRaceRun(t *testing.T, env *cwEnv) *raceRun {
	rr := &raceRun{t: t, env: env, st: env.base.Clone(), tap: newTap(nil, true)}
	rr.st.Inject(rr.tap)
	rr.st.StartLog()
	rr.ps = &pauseStore{Store: rr.st}
	img, err := OpenStorage(rr.ps, env.dir, OpenOptions{Opener: func(path string, fo FileOptions) (Storage, error) {
		rr.bps = &pauseStore{Store: env.bbase.Clone()}
		return rr.bps, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	rr.img = img
	rr.r = newRunner(img, rr.tap, env.firstGen)
	// Warm the caches, so that the trapped operations are the data I/O of the requests.
	buf := make([]byte, img.Size())
	if _, err := img.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}
	return rr
}

// async runs f in a goroutine; the channel yields its error.
func async(f func() error) chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

func (rr *raceRun) hit(tr *pauseTrap, what string) {
	rr.t.Helper()
	select {
	case <-tr.hit:
	case <-time.After(30 * time.Second): // only a hang: far above the milliseconds it takes
		rr.t.Fatalf("%s never reached its stop", what)
	}
}

// blocked requires that ch does not yield for a while: the request waits for the stopped one.
func (rr *raceRun) blocked(ch chan error, what string) {
	rr.t.Helper()
	select {
	case err := <-ch:
		rr.t.Fatalf("%s completed (err %v) while the request it must wait for is stopped", what, err)
	case <-time.After(waitT):
	}
}

func (rr *raceRun) done(ch chan error, what string) {
	rr.t.Helper()
	select {
	case err := <-ch:
		if err != nil {
			rr.t.Fatalf("%s: %v", what, err)
		}
	case <-time.After(30 * time.Second): // only a hang: far above the milliseconds it takes
		var b strings.Builder
		pprof.Lookup("goroutine").WriteTo(&b, 2)
		rr.t.Fatalf("%s did not complete\n%s", what, b.String())
	}
}

// read reads n bytes at off and requires every sector to hold one of gens (for the sector).
func (rr *raceRun) read(off, n uint64, allowed func(sec uint64) []uint32, what string) error {
	buf := make([]byte, n)
	if _, err := rr.img.ReadAt(buf, int64(off)); err != nil {
		return err
	}
	for i := uint64(0); i < n/sectorSize; i++ {
		sec := off/sectorSize + i
		idx, g, ok := readStamp(buf[i*sectorSize:])
		if !ok || (g != 0 && idx != sec) || !containsGen(allowed(sec), g) {
			return fmt.Errorf("%s: sector %d holds (%d, gen %d, valid %v), allowed %v", what, sec, idx, g, ok, allowed(sec))
		}
	}
	return nil
}

func containsGen(l []uint32, g uint32) bool {
	for _, x := range l {
		if x == g {
			return true
		}
	}
	return false
}

// finish flushes and closes, then checks: the disk reads as the operations applied in order
// (the engine's serialization), the image is clean, and every crash state of the log passes.
func (rr *raceRun) finish(order []int, cnt *cwCounters) {
	t := rr.t
	if err := rr.r.flush(); err != nil {
		t.Fatal(err)
	}
	if err := rr.r.close(); err != nil {
		t.Fatal(err)
	}
	ops := rr.r.snapshotOps()
	m := rr.env.model(ops)
	want := &cwSets{one: append([]uint32(nil), rr.env.init...), more: map[uint64][]uint32{}, sizes: []uint64{rr.env.w.size}}
	for _, i := range order {
		if ops[i].err != nil {
			t.Fatalf("%v", ops[i])
		}
		m.apply(want, &ops[i], true)
	}
	final := &cwExpect{sets: want, extra: map[uint64][]uint32{}, sizes: want.sizes, what: "after the race, in the engine's order"}
	rr.st.Inject(nil)
	if err := rr.env.checkState(rr.st.Clone(), final, cwStateOpts{label: "final", qemu: true}, cnt); err != nil {
		t.Fatalf("final state: %v (kept at %s)\n\toperations %v", err, rr.env.keepState(t, rr.st, t.Name()), ops)
	}
	// Crash states: the flush and close at the end do not count as durable points (the model
	// would order racing writes by completion, the engine orders them by its in-flight table).
	for i := range ops {
		if ops[i].kind == cwFlush || ops[i].kind == cwClose {
			ops[i].err = errNotCounted
		}
	}
	m = rr.env.model(ops)
	syncs := rr.st.SyncPoints()
	durable := func(b int) int { return durablePrefix(syncs, b) }
	check := func(what string, pt memstore.CrashPoint, cs *memstore.Store, n int) {
		o := cwStateOpts{label: fmt.Sprintf("%s barrier %d variant %d", what, pt.Barrier, pt.Variant), qemu: *crashFull || n%4 == 1, leaksOK: true}
		if err := rr.env.checkState(cs, m.crashExpect(durable(pt.Barrier), pt.Barrier), o, cnt); err != nil {
			t.Fatalf("crash at %s (site %s): %v (kept at %s)\n\toperations %v", o.label, rr.tap.siteAt[pt.Barrier], err,
				rr.env.keepState(t, cs, fmt.Sprintf("%s-%s-b%d-v%d", t.Name(), what, pt.Barrier, pt.Variant)), ops)
		}
	}
	// Every subset of every small window, whole writes; then torn random subsets.
	maxK, variants := 4, 1
	switch {
	case *crashFull:
		variants = 4
	case crashRaceBuild:
		maxK, variants = 2, 0
	}
	n := 0
	for pt, cs := range subsetStates(rr.st, maxK, -1) {
		n++
		check("subset", pt, cs, n)
	}
	for pt, cs := range rr.st.CrashStates(variants, 7, memstore.CrashConfig{Torn: true}) {
		if variants == 0 {
			break
		}
		n++
		check("torn", pt, cs, n)
	}
}

var errNotCounted = fmt.Errorf("not a durable point for the race model")

// dataWrite matches the one-cluster data write of an allocating request: guest data, which
// begins with a sector stamp (the cluster copied from the stamped backing file), unlike the
// refcount block an allocation may write first (a batch reservation, alloc_reserve.go).
func dataWrite(off int64, b []byte) bool {
	return len(b) == int(cs64) && binary.BigEndian.Uint64(b) == stampMagic
}

// TestInterleavedRequestsStayConsistent replays 046-style interleavings: A is stopped at a
// chosen point of its I/O, B races into the same cluster (a write before, after, over or
// across A's range, a zero, a discard), and must wait for A; readers must not wait and see the
// old contents.
func TestInterleavedRequestsStayConsistent(t *testing.T) {
	env := buildEnv(t, raceWorkload)
	var cnt cwCounters
	t.Cleanup(func() {
		t.Logf("race patterns: %d states checked, %d qemu-img checks", cnt.states.Load(), cnt.qemuChecks.Load())
	})
	type pattern struct {
		name string
		// stop says where A stops: "write" (its data write), "cow" (its copy-on-write read
		// from the backing file), "link" (after its data write, before its L2 entry).
		stop string
		a    [2]uint64
		b    func(r *cwRunner) error
		wait bool // B must wait for A
	}
	w := func(off, n uint64) func(r *cwRunner) error { return func(r *cwRunner) error { return r.write(off, n) } }
	patterns := []pattern{
		{"after-in-same-cluster", "write", [2]uint64{raceX, 16 * kib}, w(raceX+32*kib, 16*kib), true},
		{"before-in-same-cluster", "write", [2]uint64{raceX + 32*kib, 16 * kib}, w(raceX+4*kib, 8*kib), true},
		{"overlapping", "write", [2]uint64{raceX, 16 * kib}, w(raceX+8*kib, 16*kib), true},
		{"same-range", "link", [2]uint64{raceX + 4*kib, 8 * kib}, w(raceX+4*kib, 8*kib), true},
		{"into-next-cluster", "write", [2]uint64{raceX, 16 * kib}, w(raceX+48*kib, 32*kib), true},
		{"from-previous-cluster", "write", [2]uint64{raceX + 4*kib, 4 * kib}, w(raceX-16*kib, 32*kib), true},
		{"during-cow-read", "cow", [2]uint64{raceX + 4*kib, 4 * kib}, w(raceX+20*kib, 4*kib), true},
		{"overlap-during-cow-read", "cow", [2]uint64{raceX + 4*kib, 8 * kib}, w(raceX, 8*kib), true},
		{"zero-after-link", "link", [2]uint64{raceX, 16 * kib}, func(r *cwRunner) error { return r.zero(raceX+8*kib, 16*kib, false) }, true},
		{"zero-unmap-whole", "write", [2]uint64{raceX, 16 * kib}, func(r *cwRunner) error { return r.zero(raceX, cs64, true) }, true},
		{"discard-whole", "write", [2]uint64{raceX + 8*kib, 16 * kib}, func(r *cwRunner) error { return r.discard(raceX, cs64) }, true},
		{"other-cluster-no-wait", "write", [2]uint64{raceX, 16 * kib}, w(raceY, 4*kib), false},
	}
	for _, p := range patterns {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			rr := newRaceRun(t, env)
			var tr *pauseTrap
			switch p.stop {
			case "write":
				tr = rr.ps.arm(memstore.OpWrite, false, dataWrite)
			case "link":
				tr = rr.ps.arm(memstore.OpWrite, true, dataWrite)
			case "cow":
				tr = rr.bps.arm(memstore.OpRead, false, nil)
			}
			a := async(func() error { return rr.r.write(p.a[0], p.a[1]) })
			rr.hit(tr, "A")
			// A reader of A's cluster never waits, and sees the old contents.
			old := func(sec uint64) []uint32 { return []uint32{rr.env.init[sec]} }
			if err := rr.read(raceX, cs64, old, "reader while A is stopped"); err != nil {
				t.Fatal(err)
			}
			b := async(func() error { return p.b(rr.r) })
			if p.wait {
				rr.blocked(b, "B")
			} else {
				rr.done(b, "B")
			}
			close(tr.release)
			rr.done(a, "A")
			if p.wait {
				rr.done(b, "B")
			}
			rr.finish([]int{0, 1}, &cnt)
		})
	}
	t.Run("flush-data-sync", func(t *testing.T) {
		t.Parallel()
		// A flush stopped right after its data sync (which it runs without the metadata lock); a write
		// into a preallocated zero cluster (no allocation, so no refcount flush syncs for it)
		// writes and links meanwhile. Its L2 entry must not reach the disk before its data:
		// the flush's metadata part syncs the data again (linkGen); else a crash can show the
		// cluster's bytes from before it was zeroed.
		rr := newRaceRun(t, env)
		tr := rr.ps.arm(memstore.OpSync, true, nil)
		f := async(rr.r.flush)
		rr.hit(tr, "flush")
		b := async(func() error { return rr.r.write(raceZ+8*kib, 8*kib) })
		rr.done(b, "B")
		close(tr.release)
		rr.done(f, "flush")
		rr.finish([]int{1}, &cnt)
	})
	t.Run("in-place-write-vs-discard-and-reuse", func(t *testing.T) {
		t.Parallel()
		// A writes in place into an allocated cluster (pinned, not in flight) and is stopped at
		// its data write; B discards the cluster and a flush applies the free; C allocates. C
		// must not get A's host cluster while A may still write there.
		rr := newRaceRun(t, env)
		host := rr.hostOf(raceP)
		tr := rr.ps.arm(memstore.OpWrite, false, func(off int64, b []byte) bool { return len(b) == 8*kib })
		a := async(func() error { return rr.r.write(raceP+8*kib, 8*kib) })
		rr.hit(tr, "A")
		rr.done(async(func() error { return rr.r.discard(raceP, cs64) }), "discard")
		rr.done(async(rr.r.flush), "flush")
		rr.done(async(func() error { return rr.r.write(raceW, cs64) }), "C")
		if got := rr.hostOf(raceW); got == host {
			t.Fatalf("C was given host cluster %#x, which A is still writing", uint64(got))
		}
		close(tr.release)
		rr.done(a, "A")
		rr.finish([]int{0, 1, 3}, &cnt)
	})
	t.Run("reader-vs-discard-and-reuse", func(t *testing.T) {
		t.Parallel()
		// A reader stopped at its data read of an allocated cluster; the cluster is discarded
		// and freed, and C allocates: the reader must see the old data, never C's.
		rr := newRaceRun(t, env)
		host := rr.hostOf(raceP)
		tr := rr.ps.arm(memstore.OpRead, false, func(off int64, b []byte) bool { return off == int64(host) })
		before := func(sec uint64) []uint32 { return []uint32{rr.env.init[sec]} }
		rd := async(func() error { return rr.read(raceP, cs64, before, "stopped reader") })
		rr.hit(tr, "reader")
		rr.done(async(func() error { return rr.r.discard(raceP, cs64) }), "discard")
		rr.done(async(rr.r.flush), "flush")
		rr.done(async(func() error { return rr.r.write(raceW, cs64) }), "C")
		if got := rr.hostOf(raceW); got == host {
			t.Fatalf("C was given host cluster %#x, which a reader is still reading", uint64(got))
		}
		close(tr.release)
		rr.done(rd, "reader")
		rr.finish([]int{0, 2}, &cnt)
	})
}

// hostOf returns the host cluster a guest cluster maps to.
func (rr *raceRun) hostOf(off uint64) HostOffset {
	rr.t.Helper()
	ext, err := rr.img.Map(GuestOffset(off), cs64)
	if err != nil || len(ext) != 1 || ext[0].Kind != kindData || ext[0].Depth != 0 {
		rr.t.Fatalf("map %#x: %v %+v", off, err, ext)
	}
	return ext[0].Host
}
