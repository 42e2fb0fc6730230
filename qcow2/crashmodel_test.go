// Crash and fault workloads, model part: which stamps each sector may hold after a crash at a
// given point of the store's log, or after a failure.
package qcow2

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
)

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
