// Crash simulation: CrashClone from the pending writes, and the write log with CrashAt.
package memstore

import (
	"fmt"
	"iter"
	"math/rand/v2"
)

// sectorSize is the unit a torn write is split into: a disk writes a 512-byte sector
// atomically or not at all.
const sectorSize = 512

// Policy says what becomes of the mutations not covered by a Sync when the machine crashes.
type Policy uint8

const (
	// KeepRandom keeps each unsynced mutation with probability 1/2, independently: any
	// subset may have reached the disk, in any order.
	KeepRandom Policy = iota
	// DropUnsynced keeps nothing that was not synced: the oldest state a crash can leave.
	DropUnsynced
	// KeepUnsynced keeps every mutation: the state after a crash that lost nothing.
	KeepUnsynced
)

// CrashConfig selects the crash model.
type CrashConfig struct {
	Policy Policy
	// Torn lets a kept write (under KeepRandom) be torn: each 512-byte sector it touches
	// survives independently, with probability 1/2.
	Torn bool
	// TearOnly, when set with Torn, limits tearing to the writes it returns true for (for
	// example metadata clusters); other kept writes survive whole.
	TearOnly func(Op) bool
}

// CrashClone returns a new store holding a state that a power failure right now could leave:
// everything synced, plus the unsynced mutations cfg.Policy keeps. rng drives KeepRandom and
// tearing; it may be nil for the other policies. The clone has no pending mutations, no log
// and no injector. s is unchanged.
func (s *Store) CrashClone(rng *rand.Rand, cfg CrashConfig) *Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.durable.clone()
	applyCrashed(l, s.pending, rng, cfg)
	return fromLayer(l)
}

// applyCrashed applies the unsynced ops to l as the crash model says.
func applyCrashed(l *layer, ops []Op, rng *rand.Rand, cfg CrashConfig) {
	for _, op := range ops {
		switch cfg.Policy {
		case DropUnsynced:
			continue
		case KeepUnsynced:
			l.apply(op)
			continue
		}
		if rng.IntN(2) == 0 {
			continue
		}
		if op.Kind == OpWrite && cfg.Torn && (cfg.TearOnly == nil || cfg.TearOnly(op)) {
			tear(l, op, rng)
			continue
		}
		l.apply(op)
	}
}

// tear applies a random subset of the 512-byte sectors a write touches (sectors are aligned
// to absolute file offsets, as on a disk).
func tear(l *layer, op Op, rng *rand.Rand) {
	for pos := op.Off; pos < op.Off+op.Len; {
		next := min((pos/sectorSize+1)*sectorSize, op.Off+op.Len)
		if rng.IntN(2) == 1 {
			l.writeAt(op.Data[pos-op.Off:next-op.Off], pos)
		}
		pos = next
	}
}

// StartLog starts recording every mutation and Sync, with the current contents (pending
// mutations included) as the base state CrashAt replays from. It replaces any earlier log.
// The log holds a copy of every written byte; use it for workloads of bounded size.
func (s *Store) StartLog() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logging = true
	s.base = s.cur.clone()
	s.log = nil
}

// Log returns a copy of the recorded operations (written data is shared, not copied; do not
// modify it).
func (s *Store) Log() []Op {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Op(nil), s.log...)
}

// SyncPoints returns the log length right after each recorded Sync: the crash points at
// which every earlier mutation is durable.
func (s *Store) SyncPoints() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pts []int
	for i, op := range s.log {
		if op.Kind == OpSync {
			pts = append(pts, i+1)
		}
	}
	return pts
}

// CrashAt returns a new store holding a state that a crash after the first n logged
// operations could leave: the base state, the mutations before the last Sync among those n,
// and of the mutations after that Sync the ones cfg keeps. CrashAt(len(Log()), ...) is the
// crash-right-now state. It fails if StartLog was not called or n is out of range.
func (s *Store) CrashAt(n int, rng *rand.Rand, cfg CrashConfig) (*Store, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.logging {
		return nil, fmt.Errorf("memstore: CrashAt without StartLog")
	}
	if n < 0 || n > len(s.log) {
		return nil, fmt.Errorf("memstore: crash point %d outside the %d-operation log", n, len(s.log))
	}
	ops := s.log[:n]
	lastSync := -1
	for i, op := range ops {
		if op.Kind == OpSync {
			lastSync = i
		}
	}
	l := s.base.clone()
	for _, op := range ops[:lastSync+1] {
		l.apply(op)
	}
	applyCrashed(l, ops[lastSync+1:], rng, cfg)
	return fromLayer(l), nil
}

// CrashPoint names one state CrashStates yields: the crash happens while the Sync at log
// index Barrier (or, for the trailing writes, at len(Log())) is in flight, and Variant 0 is
// the state with none of the writes since the previous Sync, variants 1.. random subsets.
type CrashPoint struct {
	Barrier int
	Variant int
}

// CrashStates enumerates crash states for every barrier of the log (docs/test-plan.md, crash
// enumeration): for each Sync, and for the unsynced tail of the log, the durable state before it
// (variant 0) and then variants states in which a random subset of the mutations since the
// previous Sync reached the disk (cfg.Torn and cfg.TearOnly apply; cfg.Policy is ignored).
// A barrier with nothing pending yields only variant 0. The states are independent stores;
// the sequence is deterministic for a seed. It walks the log once, so enumerating every
// state costs one clone per state rather than a replay.
func (s *Store) CrashStates(variants int, seed uint64, cfg CrashConfig) iter.Seq2[CrashPoint, *Store] {
	s.mu.Lock()
	logging, base, log := s.logging, s.base, append([]Op(nil), s.log...)
	s.mu.Unlock()
	cfg.Policy = KeepRandom
	return func(yield func(CrashPoint, *Store) bool) {
		if !logging {
			return
		}
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		s.mu.Lock() // cloning changes base's bookkeeping, which s.mu guards
		durable := base.clone()
		s.mu.Unlock()
		start := 0
		for i := 0; i <= len(log); i++ {
			if i < len(log) && log[i].Kind != OpSync {
				continue
			}
			pending := log[start:i]
			if !yield(CrashPoint{Barrier: i}, fromLayer(durable.clone())) {
				return
			}
			for v := 1; v <= variants && len(pending) > 0; v++ {
				l := durable.clone()
				applyCrashed(l, pending, rng, cfg)
				if !yield(CrashPoint{Barrier: i, Variant: v}, fromLayer(l)) {
					return
				}
			}
			for _, op := range pending {
				durable.apply(op)
			}
			start = i + 1
		}
	}
}
