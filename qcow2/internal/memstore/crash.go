// Crash simulation: CrashClone from the pending writes, and the write log with CrashAt.
package memstore

import (
	"fmt"
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
