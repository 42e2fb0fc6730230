package qcow2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// crOp is one guest operation of a crash run, with the log positions around it.
type crOp struct {
	kind       string
	off, n     uint64
	start, end int // memstore log length before and after
	flushes    int // flushes completed before the op
}

// TestCrashRandomPoints writes to images held in a memstore that logs every write and sync,
// then rebuilds the states a power failure could leave at random points of that log (unsynced
// writes kept or dropped at random, torn at sector granularity) and requires of each:
// qemu-img check exits 0 or 3 (leaks at most, never corruption); our Open of it works, read-only
// and read-write; every sector that no operation touched since the last completed Flush holds
// the data flushed then; and after our read-write open and a clean close, qemu-img check still
// finds no corruption. With lazy refcounts the crashed image is dirty: our read-write open
// repairs it first, and the check after that must be clean.
func TestCrashRandomPoints(t *testing.T) {
	points, ops, size := 6, 40, uint64(4<<20)
	if *longTests {
		points, ops, size = 150, 300, 16<<20
	}
	// Small clusters and a 2-table L2 cache, so that tables are evicted (written outside
	// Flush) often: the orderings declared as cache dependencies are what is tested then.
	cases := []struct{ name, opts string }{
		{"64k", "cluster_size=64k"},
		{"512-growth", "cluster_size=512,refcount_bits=16"},
		{"4k", "cluster_size=4k"},
		{"extl2", "cluster_size=16k,extended_l2=on"},
		{"v2", "compat=0.10,cluster_size=4k"},
		{"lazy", "cluster_size=4k,lazy_refcounts=on"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			crRun(t, c.opts, size, ops, points, uint64(i+1))
		})
	}
}

func crRun(t *testing.T, opts string, size uint64, nops, points int, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	dir := t.TempDir()
	p := engCreate(t, dir, "c.qcow2", opts, fmt.Sprint(size))
	s := storeOf(t, p)
	s.StartLog()
	img, err := OpenStorage(s, dir, OpenOptions{L2CacheBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	cs := img.geo.ClusterSize()
	lazy := img.hdr.LazyRefcounts()
	model := make([]byte, size)
	flushed := [][]byte{append([]byte(nil), model...)} // model at each completed flush
	flushEnd := []int{0}                               // log length when it completed
	var log []crOp
	for i := 0; i < nops; i++ {
		off, n := propRange(rng, size, cs)
		op := crOp{off: off, n: n, start: len(s.Log()), flushes: len(flushEnd) - 1}
		switch r := rng.IntN(10); {
		case r < 5:
			op.kind = "write"
			buf := make([]byte, n)
			fillPattern(buf, byte(i*7+1))
			if _, err := img.WriteAt(buf, int64(off)); err != nil {
				t.Fatal(err)
			}
			copy(model[off:], buf)
		case r < 6:
			op.kind = "zero"
			if err := img.Zero(GuestOffset(off), n, unmapFlag(rng.IntN(2) == 0)); err != nil {
				t.Fatal(err)
			}
			clear(model[off : off+n])
		case r < 7:
			op.kind = "discard"
			if err := img.Discard(GuestOffset(off), n); err != nil {
				t.Fatal(err)
			}
			m := &propModel{shadow: model, cs: cs, v2: img.hdr.Version < 3}
			m.discard(off, n)
		default:
			op.kind = "flush"
			if err := img.Flush(); err != nil {
				t.Fatal(err)
			}
			flushed = append(flushed, append([]byte(nil), model...))
			flushEnd = append(flushEnd, len(s.Log()))
		}
		op.end = len(s.Log())
		log = append(log, op)
	}
	total := len(s.Log())
	img.Close()

	for k := 0; k < points; k++ {
		n := rng.IntN(total + 1)
		crashed, err := s.CrashAt(n, rng, memstore.CrashConfig{Policy: memstore.KeepRandom, Torn: true})
		if err != nil {
			t.Fatal(err)
		}
		// The last flush that completed before the crash, and the sectors touched since.
		f := 0
		for j := range flushEnd {
			if flushEnd[j] <= n {
				f = j
			}
		}
		touched := make([]bool, size/512)
		for _, op := range log {
			// Every op after flush f that started before the crash may have changed what
			// is on disk, through its own writes or through later ones (an eviction, say),
			// even an op that wrote nothing itself.
			if op.kind == "flush" || op.flushes < f || op.start > n {
				continue
			}
			a, b := op.off, op.off+op.n
			if op.kind == "discard" {
				a, b = a/cs*cs, alignUp(b, cs)
			}
			for sec := a / 512; sec < (b+511)/512 && sec < uint64(len(touched)); sec++ {
				touched[sec] = true
			}
		}
		crVerify(t, fmt.Sprintf("crash at %d/%d", n, total), dir, crashed, flushed[f], touched, lazy)
	}
}

func crVerify(t *testing.T, what, dir string, crashed *memstore.Store, want []byte, touched []bool, lazy bool) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "crashed.qcow2")
	if err := crashed.WriteFile(file); err != nil {
		t.Fatal(err)
	}
	q := corpus.QemuCheck(t, file, corpus.CheckOptions{})
	if !lazy && q.ExitCode != 0 && q.ExitCode != 3 {
		t.Fatalf("%s: qemu-img check %v", what, q)
	}
	// Read-only open works as is (even dirty), and the flushed data is there.
	ro, err := OpenStorage(crashed.Clone(), dir, OpenOptions{ReadOnly: true})
	if err != nil {
		t.Fatalf("%s: read-only open: %v", what, err)
	}
	crCheckFlushed(t, what+" (read-only)", ro, want, touched)
	ro.Close()
	// Read-write open (repairing a dirty image), same data, clean close.
	rwStore := crashed.Clone()
	rw, err := OpenStorage(rwStore, dir, OpenOptions{})
	if err != nil {
		t.Fatalf("%s: read-write open: %v (qemu-img check %v)", what, err, q)
	}
	crCheckFlushed(t, what+" (read-write)", rw, want, touched)
	if err := rw.Close(); err != nil {
		t.Fatalf("%s: close: %v", what, err)
	}
	if err := rwStore.Reopen().WriteFile(file); err != nil {
		t.Fatal(err)
	}
	if q2 := corpus.QemuCheck(t, file, corpus.CheckOptions{}); q2.ExitCode != 0 && q2.ExitCode != 3 || (lazy && q2.ExitCode != 0) {
		t.Fatalf("%s: after our open and close, qemu-img check %v", what, q2)
	}
}

func crCheckFlushed(t *testing.T, what string, img *Image, want []byte, touched []bool) {
	t.Helper()
	got := engReadAll(t, img)
	for sec := range touched {
		if touched[sec] {
			continue
		}
		a, b := sec*512, sec*512+512
		if !bytes.Equal(got[a:b], want[a:b]) {
			t.Fatalf("%s: sector %d lost flushed data", what, sec)
		}
	}
}
