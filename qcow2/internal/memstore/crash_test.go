package memstore_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

func contents(t *testing.T, s *memstore.Store) []byte {
	t.Helper()
	b, err := s.Bytes(1 << 24)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fill(c byte, n int) []byte { return bytes.Repeat([]byte{c}, n) }

// TestCrashClonePolicies: DropUnsynced gives the synced state, KeepUnsynced the current
// state, and the source is unchanged by cloning.
func TestCrashClonePolicies(t *testing.T) {
	s := memstore.New()
	s.WriteAt(fill('a', 4096), 0)
	s.Sync()
	synced := contents(t, s)
	s.WriteAt(fill('b', 100), 50)
	s.Truncate(10000)
	s.PunchHole(0, 10)
	current := contents(t, s)

	if got := contents(t, s.CrashClone(nil, memstore.CrashConfig{Policy: memstore.DropUnsynced})); !bytes.Equal(got, synced) {
		t.Fatal("DropUnsynced did not give the synced state")
	}
	kept := s.CrashClone(nil, memstore.CrashConfig{Policy: memstore.KeepUnsynced})
	if got := contents(t, kept); !bytes.Equal(got, current) {
		t.Fatal("KeepUnsynced did not give the current state")
	}
	if kept.Pending() != 0 {
		t.Fatal("a crash clone has pending writes")
	}
	if s.Pending() != 3 || !bytes.Equal(contents(t, s), current) {
		t.Fatal("cloning changed the source")
	}
	// Writing to the clone does not touch the source.
	kept.WriteAt(fill('z', 10), 0)
	if !bytes.Equal(contents(t, s), current) {
		t.Fatal("the clone shares pages with the source")
	}
}

// TestCrashCloneRandom: with KeepRandom every unsynced write survives whole or not at all,
// independently, so over many seeds each write is seen both ways; with Torn, sectors of one
// write survive independently.
func TestCrashCloneRandom(t *testing.T) {
	s := memstore.New()
	s.WriteAt(make([]byte, 8*512), 0)
	s.Sync()
	// Four unsynced writes of two sectors each, at disjoint places.
	for i := 0; i < 4; i++ {
		s.WriteAt(fill(byte('A'+i), 1024), int64(i)*1024)
	}
	seenKept, seenDropped, seenTorn := [4]bool{}, [4]bool{}, false
	for seed := uint64(0); seed < 200; seed++ {
		rng := rand.New(rand.NewPCG(seed, 1))
		got := contents(t, s.CrashClone(rng, memstore.CrashConfig{Policy: memstore.KeepRandom}))
		for i := 0; i < 4; i++ {
			w := got[i*1024 : (i+1)*1024]
			switch {
			case bytes.Equal(w, fill(byte('A'+i), 1024)):
				seenKept[i] = true
			case bytes.Equal(w, make([]byte, 1024)):
				seenDropped[i] = true
			default:
				t.Fatalf("seed %d: write %d was torn without Torn", seed, i)
			}
		}
		got = contents(t, s.CrashClone(rng, memstore.CrashConfig{Policy: memstore.KeepRandom, Torn: true}))
		for i := 0; i < 4; i++ {
			a, b := got[i*1024:i*1024+512], got[i*1024+512:(i+1)*1024]
			for _, sec := range [][]byte{a, b} {
				if !bytes.Equal(sec, fill(byte('A'+i), 512)) && !bytes.Equal(sec, make([]byte, 512)) {
					t.Fatalf("seed %d: a sector of write %d is neither old nor new", seed, i)
				}
			}
			if !bytes.Equal(a, b) {
				seenTorn = true
			}
		}
	}
	for i := 0; i < 4; i++ {
		if !seenKept[i] || !seenDropped[i] {
			t.Errorf("write %d: kept %v dropped %v over 200 seeds", i, seenKept[i], seenDropped[i])
		}
	}
	if !seenTorn {
		t.Error("Torn never tore a write over 200 seeds")
	}
}

// TestTearOnly: writes TearOnly rejects survive whole even with Torn.
func TestTearOnly(t *testing.T) {
	s := memstore.New()
	s.WriteAt(fill('x', 2048), 0)
	cfg := memstore.CrashConfig{Policy: memstore.KeepRandom, Torn: true, TearOnly: func(op memstore.Op) bool { return op.Off >= 1<<20 }}
	for seed := uint64(0); seed < 100; seed++ {
		got := contents(t, s.CrashClone(rand.New(rand.NewPCG(seed, 2)), cfg))
		if len(got) != 0 && !bytes.Equal(got, fill('x', 2048)) {
			t.Fatalf("seed %d: a write outside TearOnly was torn", seed)
		}
	}
}

// TestCrashAtReplaysPrefixes records a workload, keeps a reference copy at every sync, and
// checks that CrashAt rebuilds exactly those states at the sync points, and the current
// state at the end of the log.
func TestCrashAtReplaysPrefixes(t *testing.T) {
	s := memstore.FromBytes(fill('0', 3000))
	s.WriteAt(fill('p', 10), 0) // pending before StartLog: part of the base
	s.StartLog()
	rng := rand.New(rand.NewPCG(5, 5))
	var atSync [][]byte
	for i := 0; i < 60; i++ {
		switch rng.IntN(6) {
		case 0:
			s.Sync()
			atSync = append(atSync, contents(t, s))
		case 1:
			s.Truncate(rng.Int64N(20000))
		case 2:
			s.PunchHole(rng.Int64N(20000), rng.Int64N(5000))
		default:
			s.WriteAt(fill(byte('a'+i%26), rng.IntN(3000)+1), rng.Int64N(20000))
		}
	}
	pts := s.SyncPoints()
	if len(pts) != len(atSync) || len(pts) == 0 {
		t.Fatalf("%d sync points, %d syncs", len(pts), len(atSync))
	}
	for i, n := range pts {
		c, err := s.CrashAt(n, nil, memstore.CrashConfig{Policy: memstore.DropUnsynced})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(contents(t, c), atSync[i]) {
			t.Fatalf("CrashAt(%d) differs from the state at sync %d", n, i)
		}
	}
	end, err := s.CrashAt(len(s.Log()), nil, memstore.CrashConfig{Policy: memstore.KeepUnsynced})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(contents(t, end), contents(t, s)) {
		t.Fatal("CrashAt(end, KeepUnsynced) differs from the current state")
	}
	// DropUnsynced right after the last sync equals DropUnsynced at the end of the log, and
	// both equal CrashClone's.
	last, _ := s.CrashAt(len(s.Log()), nil, memstore.CrashConfig{Policy: memstore.DropUnsynced})
	if !bytes.Equal(contents(t, last), atSync[len(atSync)-1]) ||
		!bytes.Equal(contents(t, s.CrashClone(nil, memstore.CrashConfig{Policy: memstore.DropUnsynced})), atSync[len(atSync)-1]) {
		t.Fatal("crash state after the last sync is not the last synced state")
	}
	base, _ := s.CrashAt(0, nil, memstore.CrashConfig{})
	want := fill('0', 3000)
	copy(want, fill('p', 10))
	if !bytes.Equal(contents(t, base), want) {
		t.Fatal("CrashAt(0) is not the state at StartLog")
	}
	if _, err := s.CrashAt(len(s.Log())+1, nil, memstore.CrashConfig{}); err == nil {
		t.Fatal("CrashAt past the log succeeded")
	}
	if _, err := memstore.New().CrashAt(0, nil, memstore.CrashConfig{}); err == nil {
		t.Fatal("CrashAt without StartLog succeeded")
	}
}

// TestCrashStates: variant 0 at each barrier is the state at the previous sync; in every
// variant each 512-byte sector holds either its content before the barrier's writes or after
// them; barriers with nothing pending yield one state; the sequence is deterministic for a
// seed, and stopping early works.
func TestCrashStates(t *testing.T) {
	s := memstore.New()
	s.StartLog()
	// states[i] is the contents at the i-th barrier's start (the previous sync).
	states := [][]byte{nil}
	for round := 0; round < 4; round++ {
		for k := 0; k < 3; k++ {
			s.WriteAt(fill(byte('a'+round*3+k), 512), int64(k*512))
		}
		s.Sync()
		states = append(states, contents(t, s))
	}
	s.Sync() // nothing pending
	states = append(states, contents(t, s))
	s.WriteAt(fill('z', 512), 0)
	states = append(states, contents(t, s)) // the tail's "after"
	sector := func(b []byte, k int) []byte {
		out := make([]byte, 512)
		if k*512 < len(b) {
			copy(out, b[k*512:])
		}
		return out
	}
	count := map[int]int{}
	var order []memstore.CrashPoint
	idx, changed := -1, 0
	for p, st := range s.CrashStates(5, 42, memstore.CrashConfig{}) {
		order = append(order, p)
		count[p.Barrier]++
		if p.Variant == 0 {
			idx++
		}
		got := contents(t, st)
		before, after := states[idx], states[idx+1]
		if p.Variant == 0 && !bytes.Equal(got, before) {
			t.Fatalf("barrier %d variant 0 is not the previous synced state", p.Barrier)
		}
		if p.Variant > 0 && !bytes.Equal(got, before) {
			changed++
		}
		for k := 0; k < 3; k++ {
			if g := sector(got, k); !bytes.Equal(g, sector(before, k)) && !bytes.Equal(g, sector(after, k)) {
				t.Fatalf("barrier %d variant %d: sector %d is neither old nor new", p.Barrier, p.Variant, k)
			}
		}
	}
	if changed < 10 {
		t.Errorf("only %d of 25 variants kept any pending write", changed)
	}
	// Syncs at log indices 3, 7, 11, 15, 16, and the tail at 18.
	want := map[int]int{3: 6, 7: 6, 11: 6, 15: 6, 16: 1, 18: 6}
	if len(count) != len(want) {
		t.Errorf("barriers %v, want %v", count, want)
	}
	for b, n := range want {
		if count[b] != n {
			t.Errorf("barrier %d: %d states, want %d (all: %v)", b, count[b], n, count)
		}
	}
	var again []memstore.CrashPoint
	for p := range s.CrashStates(5, 42, memstore.CrashConfig{}) {
		again = append(again, p)
		if len(again) == 3 {
			break
		}
	}
	if len(again) != 3 || again[2] != order[2] {
		t.Fatalf("not deterministic or early stop broken: %v vs %v", again, order[:3])
	}
	for range memstore.New().CrashStates(3, 1, memstore.CrashConfig{}) {
		t.Fatal("CrashStates without StartLog yielded states")
	}
}
