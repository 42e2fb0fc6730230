// Crash and fault harness (docs/test-plan.md, crash enumeration), shared part: sector stamps,
// the store tap (log length, sync call sites, faults), the runner that performs and records guest
// operations, and the model of which stamps each sector may hold after a crash at a given point
// of the store's log, or after a failure. The checks of one state are in
// crash_harness_check_test.go, the workloads in crash_workloads_test.go.
package qcow2

import (
	"cmp"
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// crashFull runs the full crash-state enumeration and the full fault sweep instead of samples.
var crashFull = flag.Bool("qcow2.crash.full", false, "run the full qcow2 crash-state enumeration and fault sweep")

// crashKeep is where failing crash and fault states are kept (default: the test's temp dir).
var crashKeep = flag.String("qcow2.crash.keep", "", "directory to keep failing qcow2 crash/fault states in")

// Stamps. Every sector a workload writes holds (sector, generation): the header names both, and
// the body repeats one word derived from them (compressible, so qemu-img convert -c packs it).
// A sector that reads as another sector's stamp is a cross-link; one that is neither zeros nor
// a whole stamp is garbage; a generation the model does not allow is lost or stale data.
const (
	stampMagic = 0x716e626453544d50 // "qnbdSTMP"
	sectorSize = 512
)

// stampWord is the fill word of a stamp: a bijective mix of sector+gen*K, so that for one
// generation every bit of the sector number changes the word.
func stampWord(sector uint64, gen uint32) uint64 {
	x := sector + uint64(gen)*0x9e3779b97f4a7c15
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// stampSector fills one sector with the stamp of (sector, gen); gen 0 means zeros.
func stampSector(b []byte, sector uint64, gen uint32) {
	if gen == 0 {
		clear(b[:sectorSize])
		return
	}
	binary.BigEndian.PutUint64(b[0:], stampMagic)
	binary.BigEndian.PutUint64(b[8:], sector)
	binary.BigEndian.PutUint32(b[16:], gen)
	binary.BigEndian.PutUint32(b[20:], ^gen)
	binary.LittleEndian.PutUint64(b[24:], stampWord(sector, gen))
	for n := 8; 24+n < sectorSize; n *= 2 { // doubling copies, not a store per word
		copy(b[24+n:sectorSize], b[24:24+n])
	}
}

// stampRange fills b, which holds the guest bytes from off (sector aligned), with gen.
func stampRange(b []byte, off uint64, gen uint32) {
	for i := 0; i+sectorSize <= len(b); i += sectorSize {
		stampSector(b[i:], off/sectorSize+uint64(i/sectorSize), gen)
	}
}

// readStamp decodes one sector: gen 0 for zeros, ok false for anything but zeros or a whole
// valid stamp.
func readStamp(b []byte) (sector uint64, gen uint32, ok bool) {
	b = b[:sectorSize]
	// Whole-slice comparisons rather than loops over bytes or words: under the race
	// detector every load in a loop is a call into the detector, and this runs on every
	// sector of every crash state.
	if binary.BigEndian.Uint64(b) != stampMagic {
		return 0, 0, string(b) == string(zeroSector[:])
	}
	sector, gen = binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint32(b[16:])
	if gen == 0 || binary.BigEndian.Uint32(b[20:]) != ^gen {
		return 0, 0, false
	}
	// The fill repeats one word: its first copy is right, and the fill equals itself
	// shifted by a word.
	if binary.LittleEndian.Uint64(b[24:]) != stampWord(sector, gen) || string(b[24:sectorSize-8]) != string(b[32:]) {
		return 0, 0, false
	}
	return sector, gen, true
}

// zeroSector is a sector of zeros, an unwritten sector's contents.
var zeroSector [sectorSize]byte

// cwTap is a store's injector: it counts the mutations and syncs the store logs (so the log
// length is known without copying the log), records which engine code issued each Sync (the
// barrier's site), and passes operations to an optional fault rule, noting each fault it fires
// and the guest operation in progress then.
type cwTap struct {
	rule  memstore.Injector
	sites bool
	// armed gates the rule: operations before arm (opening the image) neither fail nor count.
	armed atomic.Bool
	// cur is the index of the guest operation in progress (single-threaded workloads), or -1.
	cur atomic.Int64

	mu      sync.Mutex
	logLen  int
	siteAt  map[int]string // log index of a Sync -> its site
	fired   []cwFire
	seen    [5]int // operations seen per kind (faulted ones included)
	failErr error  // the error injected, once one fired
}

// cwFire is one injected fault.
type cwFire struct {
	kind memstore.OpKind
	op   int // guest operation in progress, -1 if unknown
	log  int // log length when it fired
}

func newTap(rule memstore.Injector, sites bool) *cwTap {
	t := &cwTap{rule: rule, sites: sites, siteAt: map[int]string{}}
	t.cur.Store(-1)
	return t
}

// MaybeError implements memstore.Injector. It runs with the store's lock held.
func (t *cwTap) MaybeError(op memstore.Op) error {
	var err error
	armed := t.armed.Load()
	if t.rule != nil && armed {
		err = t.rule.MaybeError(op)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if int(op.Kind) < len(t.seen) && armed {
		t.seen[op.Kind]++
	}
	if err != nil {
		t.fired = append(t.fired, cwFire{kind: op.Kind, op: int(t.cur.Load()), log: t.logLen})
		t.failErr = err
		return err
	}
	switch op.Kind {
	case memstore.OpWrite, memstore.OpPunchHole:
		if op.Len > 0 {
			t.logLen++
		}
	case memstore.OpSync:
		if t.sites {
			t.siteAt[t.logLen] = syncSite()
		}
		t.logLen++
	case memstore.OpTruncate:
		t.logLen++
	}
	return nil
}

func (t *cwTap) length() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.logLen
}

func (t *cwTap) fires() []cwFire {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]cwFire(nil), t.fired...)
}

func (t *cwTap) counts() [5]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seen
}

// syncSite names the engine code that called Sync: the innermost engine functions on the stack
// (test code and the store excluded), innermost first.
func syncSite() string {
	var pcs [40]uintptr
	n := runtime.Callers(3, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	var names []string
	for len(names) < 4 {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "github.com/qnbd/qnbd/qcow2.") && !strings.HasSuffix(f.File, "_test.go") {
			name := strings.TrimPrefix(f.Function, "github.com/qnbd/qnbd/qcow2.")
			name = strings.ReplaceAll(name, "[...]", "")
			if !strings.Contains(name, ".func") && name != "(*syncLatch).Sync" {
				names = append(names, name)
			}
		}
		if !more {
			break
		}
	}
	return strings.Join(names, "<")
}

// cwKind is the kind of a guest operation.
type cwKind uint8

const (
	cwWrite cwKind = iota
	cwZero
	cwZeroUnmap
	cwDiscard
	cwFlush
	cwResize
	cwClose
	cwSnapCreate // internal snapshot ops (crash_snapshot_test.go)
	cwSnapApply
	cwSnapDelete
	cwAmend // a header or refcount change that keeps the content (crash_amend_test.go)
)

var cwKindNames = [...]string{"write", "zero", "zero-unmap", "discard", "flush", "resize", "close", "snap-create", "snap-apply", "snap-delete", "amend"}

func (k cwKind) String() string { return cwKindNames[k] }

// cwOp is one guest operation as performed: what, where, and when in the store's log and in the
// runner's completion order.
type cwOp struct {
	kind   cwKind
	off, n uint64 // guest range; for a resize, the old and the new size
	gen    uint32 // stamp generation of a write
	// a, b is the range of whole sectors the operation changes (discard: whole clusters).
	a, b               uint64
	startLog, endLog   int    // tap log length before the call and after it returned
	startSeq, doneSeq  uint64 // runner sequence numbers at the call and at the return
	err                error
	worker             int
	sizeAfter, sizePre uint64
	// name is a snapshot op's snapshot; snap the sectors an apply reverts to.
	name string
	snap []uint32
}

// cwRunner performs guest operations on an image and records them. Errors are recorded, not
// fatal: the fault sweep runs workloads into failing storage.
type cwRunner struct {
	img *Image
	tap *cwTap
	cs  uint64
	v2B bool // version 2 image with a backing file: discard does nothing

	mu   sync.Mutex
	seq  uint64
	ops  []cwOp
	gen  uint32
	size uint64
	// mark is the log length a workload marked (markLog): the crash test enumerates every
	// subset of the small windows from there on, whatever its sample.
	mark int
	// snaps holds the sectors of each internal snapshot the runner took, by name.
	snaps map[string][]uint32
}

// markLog marks the current point of the log (see mark).
func (r *cwRunner) markLog() {
	n := r.logLen()
	r.mu.Lock()
	r.mark = n
	r.mu.Unlock()
}

// pendingFrees is the number of batched frees the image holds.
func (r *cwRunner) pendingFrees() int {
	r.img.mu.Lock()
	defer r.img.mu.Unlock()
	return len(r.img.deferred)
}

func newRunner(img *Image, tap *cwTap, firstGen uint32) *cwRunner {
	h := img.Header()
	return &cwRunner{
		img: img, tap: tap, cs: img.geo.ClusterSize(), gen: firstGen, size: img.Size(),
		v2B: h.Version < 3 && img.backing != nil,
	}
}

func (r *cwRunner) logLen() int {
	if r.tap == nil {
		return 0
	}
	return r.tap.length()
}

// begin records the start of an operation and returns its index.
func (r *cwRunner) begin(op cwOp) int {
	op.startLog = r.logLen()
	r.mu.Lock()
	r.seq++
	op.startSeq = r.seq
	op.sizePre = r.size
	r.ops = append(r.ops, op)
	i := len(r.ops) - 1
	r.mu.Unlock()
	if r.tap != nil {
		r.tap.cur.Store(int64(i))
	}
	return i
}

func (r *cwRunner) end(i int, err error) error {
	end := r.logLen()
	r.mu.Lock()
	r.seq++
	op := &r.ops[i]
	op.doneSeq, op.endLog, op.err = r.seq, end, err
	if op.kind == cwResize && err == nil {
		r.size = op.n
	}
	op.sizeAfter = r.size
	r.mu.Unlock()
	if r.tap != nil {
		r.tap.cur.Store(-1)
	}
	return err
}

func (r *cwRunner) nextGen() uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	return r.gen
}

func (r *cwRunner) write(off, n uint64) error { return r.writeW(0, off, n) }

func (r *cwRunner) writeW(worker int, off, n uint64) error {
	gen := r.nextGen()
	buf := make([]byte, n)
	stampRange(buf, off, gen)
	i := r.begin(cwOp{kind: cwWrite, off: off, n: n, gen: gen, a: off, b: off + n, worker: worker})
	_, err := r.img.WriteAt(buf, int64(off))
	return r.end(i, err)
}

func (r *cwRunner) zero(off, n uint64, unmap bool) error { return r.zeroW(0, off, n, unmap) }

func (r *cwRunner) zeroW(worker int, off, n uint64, unmap bool) error {
	k := cwZero
	if unmap {
		k = cwZeroUnmap
	}
	i := r.begin(cwOp{kind: k, off: off, n: n, a: off, b: off + n, worker: worker})
	return r.end(i, r.img.Zero(GuestOffset(off), n, unmapFlag(unmap)))
}

// discard deallocates the whole clusters of [off, off+n), as Image.Discard promises (the tail
// of the disk counts as a whole cluster).
func (r *cwRunner) discard(off, n uint64) error {
	end := off + n
	a, b := alignUp(off, r.cs), end/r.cs*r.cs
	if end == r.img.Size() {
		b = alignUp(end, r.cs)
	}
	b = min(b, r.img.Size())
	if a > b {
		a = b
	}
	if r.v2B {
		// Version 2 with a backing file: nothing is done (deallocating would expose the
		// backing file, and there is no zero flag), as in QEMU.
		a, b = 0, 0
	}
	i := r.begin(cwOp{kind: cwDiscard, off: off, n: n, a: a, b: b})
	return r.end(i, r.img.Discard(GuestOffset(off), n))
}

func (r *cwRunner) flush() error { return r.flushW(0) }

func (r *cwRunner) flushW(worker int) error {
	i := r.begin(cwOp{kind: cwFlush, worker: worker})
	return r.end(i, r.img.Flush())
}

// resize grows the disk; the new range reads as zeros.
func (r *cwRunner) resize(n uint64) error {
	old := r.img.Size()
	i := r.begin(cwOp{kind: cwResize, off: old, n: n, a: old, b: n})
	return r.end(i, r.img.Resize(n))
}

func (r *cwRunner) close() error {
	i := r.begin(cwOp{kind: cwClose})
	return r.end(i, r.img.Close())
}

// snapshotOps returns a copy of the recorded operations.
func (r *cwRunner) snapshotOps() []cwOp {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]cwOp(nil), r.ops...)
}

func (o cwOp) String() string {
	s := o.kind.String()
	switch o.kind {
	case cwWrite:
		s += fmt.Sprintf("(%#x+%#x gen %d)", o.off, o.n, o.gen)
	case cwZero, cwZeroUnmap, cwDiscard:
		s += fmt.Sprintf("(%#x+%#x)", o.off, o.n)
	case cwResize:
		s += fmt.Sprintf("(%d->%d)", o.off, o.n)
	}
	if o.err != nil {
		s += " err=" + o.err.Error()
	}
	return s
}

// cwSets holds, per sector, the generations the sector may hold (0 = zeros): one is the value
// of the latest operation; more lists further allowed values where an operation that failed (or
// may or may not have reached the disk) left the sector uncertain.
type cwSets struct {
	one   []uint32
	more  map[uint64][]uint32
	sizes []uint64
}

func addGen(list []uint32, g uint32) []uint32 {
	if slices.Contains(list, g) {
		return list
	}
	return append(list, g)
}

func addSize(list []uint64, n uint64) []uint64 {
	if slices.Contains(list, n) {
		return list
	}
	return append(list, n)
}

// cwModel turns recorded operations into expectations.
type cwModel struct {
	init     []uint32 // every sector at the start (the log's base state)
	backing  []uint32 // the backing file's sectors (nil: none)
	initSize uint64
	ops      []cwOp
	byDone   []int // indices of completed operations in completion order
	cache    map[uint64]*cwSets
}

func newModel(init, backing []uint32, initSize uint64, ops []cwOp) *cwModel {
	m := &cwModel{init: init, backing: backing, initSize: initSize, ops: ops, cache: map[uint64]*cwSets{}}
	for i, o := range ops {
		if o.doneSeq != 0 {
			m.byDone = append(m.byDone, i)
		}
	}
	slices.SortFunc(m.byDone, func(a, b int) int { return cmp.Compare(ops[a].doneSeq, ops[b].doneSeq) })
	return m
}

// value is what operation o leaves in sector sec.
func (m *cwModel) value(o *cwOp, sec uint64) uint32 {
	switch o.kind {
	case cwWrite:
		return o.gen
	case cwSnapApply:
		if sec < uint64(len(o.snap)) {
			return o.snap[sec]
		}
	}
	return 0
}

func (m *cwModel) sectors(o *cwOp) (uint64, uint64) {
	a, b := o.a/sectorSize, (o.b+sectorSize-1)/sectorSize
	return a, min(b, uint64(len(m.init)))
}

// apply records o in s: exactly (it succeeded: its value replaces the sector's) or as one more
// possibility.
func (m *cwModel) apply(s *cwSets, o *cwOp, exact bool) {
	if o.kind == cwResize {
		if exact {
			s.sizes = []uint64{o.n}
		} else {
			s.sizes = addSize(s.sizes, o.n)
		}
	}
	a, b := m.sectors(o)
	for sec := a; sec < b; sec++ {
		v := m.value(o, sec)
		if exact {
			s.one[sec] = v
			delete(s.more, sec)
		} else if v != s.one[sec] {
			s.more[sec] = addGen(s.more[sec], v)
		}
	}
}

// setsBefore returns the disk after every operation that completed before sequence number seq.
func (m *cwModel) setsBefore(seq uint64) *cwSets {
	if s, ok := m.cache[seq]; ok {
		return s
	}
	s := &cwSets{one: slices.Clone(m.init), more: map[uint64][]uint32{}, sizes: []uint64{m.initSize}}
	for _, i := range m.byDone {
		o := &m.ops[i]
		if o.doneSeq >= seq {
			break
		}
		m.apply(s, o, o.err == nil)
	}
	m.cache[seq] = s
	return s
}

// cwExpect is what a state may hold: the disk as of the last durable flush (sets), plus, for
// every sector an operation not covered by that flush touched, the values such operations
// leave (extra).
type cwExpect struct {
	sets  *cwSets
	extra map[uint64][]uint32
	sizes []uint64
	what  string
}

// finalExpect is the disk after every operation, as a clean shutdown leaves it.
func (m *cwModel) finalExpect() *cwExpect {
	s := m.setsBefore(math.MaxUint64)
	return &cwExpect{sets: s, extra: map[uint64][]uint32{}, sizes: s.sizes, what: "after a clean close"}
}

// crashExpect is what a crash may leave when the first durable operations of the log are on
// disk, and nothing at or after log index upper: every sector holds what the last flush that
// completed within the durable prefix made durable, or a value an operation since left there.
func (m *cwModel) crashExpect(durable, upper int) *cwExpect {
	var fseq uint64
	fname := "the start"
	for _, o := range m.ops {
		if (o.kind == cwFlush || o.kind == cwClose) && o.err == nil && o.doneSeq != 0 && o.endLog <= durable && o.startSeq > fseq {
			fseq = o.startSeq
			fname = fmt.Sprintf("the %s at log %d..%d", o.kind, o.startLog, o.endLog)
		}
	}
	s := m.setsBefore(max(fseq, 1))
	e := &cwExpect{sets: s, extra: map[uint64][]uint32{}, sizes: slices.Clone(s.sizes),
		what: fmt.Sprintf("durable log prefix %d, nothing from %d on; last durable flush: %s", durable, upper, fname)}
	for i := range m.ops {
		o := &m.ops[i]
		if (o.doneSeq != 0 && o.doneSeq < fseq) || o.startLog >= upper {
			continue
		}
		if o.kind == cwResize {
			e.sizes = addSize(e.sizes, o.n)
		}
		a, b := m.sectors(o)
		for sec := a; sec < b; sec++ {
			if v := m.value(o, sec); v != s.one[sec] {
				e.extra[sec] = addGen(e.extra[sec], v)
			}
		}
	}
	return e
}

func (e *cwExpect) allows(sec uint64, g uint32) bool {
	if int(sec) >= len(e.sets.one) {
		return g == 0
	}
	return e.sets.one[sec] == g || slices.Contains(e.sets.more[sec], g) || slices.Contains(e.extra[sec], g)
}

func (e *cwExpect) allowed(sec uint64) []uint32 {
	if int(sec) >= len(e.sets.one) {
		return []uint32{0}
	}
	out := append([]uint32{e.sets.one[sec]}, e.sets.more[sec]...)
	for _, g := range e.extra[sec] {
		out = addGen(out, g)
	}
	return out
}

// verify checks a guest image read back against the expectation.
func (e *cwExpect) verify(got []byte) error {
	if !slices.Contains(e.sizes, uint64(len(got))) {
		return fmt.Errorf("virtual size %d, expected one of %v (%s)", len(got), e.sizes, e.what)
	}
	var bad []string
	nbad := 0
	for sec := uint64(0); sec < uint64(len(got))/sectorSize; sec++ {
		idx, g, ok := readStamp(got[sec*sectorSize:])
		var msg string
		switch {
		case !ok:
			msg = fmt.Sprintf("sector %d (%#x) holds garbage, allowed gens %v", sec, sec*sectorSize, e.allowed(sec))
		case g != 0 && idx != sec:
			msg = fmt.Sprintf("CROSS-LINK: sector %d (%#x) holds the stamp of sector %d gen %d", sec, sec*sectorSize, idx, g)
		case !e.allows(sec, g):
			msg = fmt.Sprintf("sector %d (%#x) holds gen %d, allowed %v", sec, sec*sectorSize, g, e.allowed(sec))
		default:
			continue
		}
		nbad++
		if len(bad) < 6 {
			bad = append(bad, msg)
		}
	}
	if nbad == 0 {
		return nil
	}
	return fmt.Errorf("%d bad sectors (%s):\n\t%s", nbad, e.what, strings.Join(bad, "\n\t"))
}
