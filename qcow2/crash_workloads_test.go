// Crash and fault workloads: the images they start from and the guest operations
// they perform, deterministic for a seed.
package qcow2

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// cwWorkload is one workload of docs/test-plan.md, crash enumeration.
type cwWorkload struct {
	name    string
	opts    string // qemu-img create -o options
	size    uint64
	maxSize uint64 // the largest size it resizes to; 0: size
	l2Cache int64  // OpenOptions.L2CacheBytes
	// backing: the image has a qcow2 backing file full of stamps (generation 1), read through a
	// second memstore. compressed: the image is qemu-img convert -c of stamped data.
	// snapshot: stamped data, then an internal snapshot "s1" taken by qemu-img.
	backing, compressed, snapshot bool
	// snapOps: the workload creates, applies or deletes internal snapshots, whose crash
	// states may hold COPIED flags that disagree with refcounts (docs/snapshots.md).
	snapOps bool
	// concurrent: operations overlap in time, so a fault cannot be pinned to one of them.
	concurrent bool
	// writeThrough opens the image with OpenOptions.WriteThrough (cache=writethrough: a flush
	// after every write request).
	writeThrough bool
	setup        func(r *cwRunner) // unlogged preparation
	run          func(r *cwRunner)
	// sanity checks that the workload did what it is for (the table grew, ...), given the
	// header before and after.
	sanity func(before, after *Header) error
	// bitmaps are qemu-img bitmap --add arguments (the name last), one bitmap each, added to
	// the new image; every state is then checked by checkBitmapState (crash_bitmap_test.go).
	bitmaps [][]string
}

func (w *cwWorkload) max() uint64 { return max(w.size, w.maxSize) }

const (
	kib = 1 << 10
	mib = 1 << 20
)

var crashWorkloads = []*cwWorkload{
	{name: "first-write", opts: "cluster_size=64k", size: 4 * mib, run: func(r *cwRunner) {
		r.write(mib+512, 4*kib) // allocates the only L2 table
		r.flush()
		r.write(mib+8*kib, 4*kib) // in place
		r.write(3*mib, 64*kib)
		r.flush()
	}},
	{name: "seq-fill", opts: "cluster_size=4k", size: 4 * mib, l2Cache: 1, run: func(r *cwRunner) {
		for i, off := 0, uint64(0); off+48*kib <= 3*mib; i, off = i+1, off+48*kib {
			r.write(off, 48*kib)
			if i%8 == 7 {
				r.flush()
			}
		}
		r.flush()
	}},
	{name: "random-4k", opts: "cluster_size=512", size: 2 * mib, l2Cache: 1, run: func(r *cwRunner) {
		rng := rand.New(rand.NewPCG(3, 4))
		for i := 0; i < 48; i++ {
			r.write(rng.Uint64N(2*mib/512-8)*512, 4*kib)
			if i%12 == 11 {
				r.flush()
			}
		}
	}},
	{name: "batch-reserve", opts: "cluster_size=512", size: 8 * mib, l2Cache: 1, run: func(r *cwRunner) {
		// Allocation from reserved batches (alloc_reserve.go): writes spread over the disk, so
		// nearly each one takes a new L2 table (one per 32 KiB of guest disk: 256 of them)
		// and its data clusters from the batch, and evicts a dirty table with no sync; batches
		// of 16 clusters and up, doubling, are reserved (one sync each) and a crash leaks their
		// unused rest. Then clusters freed by a discard are reused: their stale bytes need the
		// data synced before the table is written. (8 MiB of 512-byte clusters has as many
		// L2 tables per write as 64 MiB of 4 KiB ones, for an eighth of the bytes each crash
		// state reads.)
		rng := rand.New(rand.NewPCG(9, 10))
		for i := 0; i < 40; i++ {
			r.write(rng.Uint64N(8*mib/512-8)*512, 4*kib)
		}
		r.flush()
		r.discard(0, 8*mib)
		r.flush()
		r.markLog()
		for i := 0; i < 6; i++ {
			r.write(rng.Uint64N(8*mib/512-8)*512, 2*kib)
		}
	}},
	{name: "l2-slices", opts: "cluster_size=16k", size: 64 * mib, l2Cache: 1, run: func(r *cwRunner) {
		// L2 tables in 4 KiB slices (l2slice.go): 4 slices a table, a cache of 2 slices. New
		// tables in fresh clusters are written slice by slice (the unwritten slices are holes
		// that read as empty entries); revisited tables are loaded slice by slice, and only
		// their dirty slices written. Then clusters freed by a discard are reused.
		rng := rand.New(rand.NewPCG(13, 14))
		for i := 0; i < 10; i++ {
			r.write(rng.Uint64N(64*mib/512-8)*512, 4*kib)
		}
		r.flush()
		r.discard(32*mib, 32*mib)
		r.flush()
		for i := 0; i < 3; i++ {
			r.write(32*mib+rng.Uint64N(32*mib/512-8)*512, 2*kib)
		}
	}},
	{name: "cow-backing", opts: "cluster_size=64k", size: 4 * mib, backing: true, run: func(r *cwRunner) {
		r.write(64*kib+4*kib, 4*kib) // copy-on-write from the backing file, both sides
		r.write(256*kib, 512)
		r.flush()
		r.write(64*kib+32*kib, 8*kib) // in place now
		r.zero(512*kib+1024, 2048, false)
		r.discard(1*mib, 128*kib) // zero flags hide the backing file
		r.write(1*mib+60*kib, 8*kib)
		r.flush()
		r.zero(2*mib, 192*kib, true)
		r.write(2*mib+64*kib+512, 1024)
		r.flush()
	}},
	{name: "cow-backing-v2", opts: "compat=0.10,cluster_size=4k", size: 4 * mib, backing: true, run: func(r *cwRunner) {
		r.write(8*kib+1024, 1024)
		r.write(100*kib, 12*kib)
		r.flush()
		r.discard(96*kib, 24*kib) // v2 with a backing file: nothing is done
		r.zero(200*kib+512, 4*kib, true)
		r.write(98*kib, 4*kib)
		r.flush()
	}},
	{name: "reftable-growth", opts: "cluster_size=512,refcount_bits=64", size: 4 * mib,
		// With 64-bit refcounts a 512-byte refcount block counts 64 clusters, and the
		// one-cluster reftable 64 blocks: 2 MiB of file. The setup fills it to just short of
		// full; the logged writes need more and grow the table.
		setup: func(r *cwRunner) { r.write(0, 1792*kib) },
		run: func(r *cwRunner) {
			r.write(1792*kib, 64*kib)
			r.flush()
			r.write(1856*kib, 256*kib)
			r.write(3*mib, 4*kib)
			r.flush()
		},
		sanity: func(b, a *Header) error {
			if a.RefTableOffset == b.RefTableOffset {
				return fmt.Errorf("the refcount table did not move (%d clusters at %#x)", a.RefTableClusters, a.RefTableOffset)
			}
			return nil
		}},
	{name: "l1-growth", opts: "cluster_size=512", size: 256 * kib, maxSize: 8 * mib, run: func(r *cwRunner) {
		r.write(4*kib, 8*kib)
		r.flush()
		r.resize(4 * mib) // the L1 table moves
		r.write(3*mib, 16*kib)
		r.write(200*kib, 4*kib)
		r.flush()
		r.resize(8 * mib)
		r.write(7*mib+512, 4*kib)
		r.flush()
	}, sanity: func(b, a *Header) error {
		if a.L1TableOffset == b.L1TableOffset || a.L1Size <= b.L1Size {
			return fmt.Errorf("the L1 table did not grow (%d entries at %#x)", a.L1Size, a.L1TableOffset)
		}
		return nil
	}},
	{name: "discard", opts: "cluster_size=4k", size: 4 * mib, l2Cache: 1, run: func(r *cwRunner) {
		r.write(0, 256*kib)
		r.write(2*mib, 64*kib)
		r.flush()
		r.discard(16*kib, 64*kib)
		r.discard(2*mib+1024, 16*kib) // partial clusters stay
		r.write(1*mib, 64*kib)        // may reuse nothing yet: frees wait for the flush
		r.flush()
		r.write(3*mib, 64*kib) // reuses the freed clusters
		r.discard(0, 8*kib)
		r.write(4*kib, 1024)
		r.flush()
		r.discard(3*mib, 32*kib)
		r.write(3*mib+8*kib, 4*kib)
	}},
	{name: "zeroes", opts: "cluster_size=4k", size: 4 * mib, run: func(r *cwRunner) {
		r.write(0, 128*kib)
		r.flush()
		r.zero(8*kib, 16*kib, false) // zero flags, clusters kept
		r.zero(32*kib, 16*kib, true) // deallocated
		r.zero(64*kib+512, 3*kib, false)
		r.write(10*kib, 4*kib) // into a preallocated zero cluster
		r.flush()
		r.write(1*mib, 32*kib) // reuses freed clusters
		r.zero(96*kib, 64*kib, true)
		r.flush()
	}},
	{name: "zeroes-v2", opts: "compat=0.10,cluster_size=4k", size: 4 * mib, run: func(r *cwRunner) {
		r.write(0, 64*kib)
		r.flush()
		r.zero(8*kib, 16*kib, false) // no zero flag: written zeros
		r.zero(32*kib, 16*kib, true) // deallocated
		r.write(40*kib, 2*kib)
		r.flush()
	}},
	{name: "extl2", opts: "cluster_size=64k,extended_l2=on", size: 4 * mib, run: func(r *cwRunner) {
		// 2 KiB subclusters.
		r.write(512, 1024) // one subcluster, partly
		r.write(6*kib, 4*kib)
		r.flush()
		r.write(2*kib+512, 512) // another subcluster of the same cluster
		r.zero(4*kib, 2*kib, false)
		r.zero(128*kib, 64*kib, true)
		r.write(200*kib+1024, 5*kib)
		r.flush()
		r.discard(0, 64*kib)
		r.write(30*kib, 2*kib)
		r.zero(201*kib, 1024, false)
		r.flush()
	}},
	{name: "lazy", opts: "cluster_size=4k,lazy_refcounts=on", size: 4 * mib, l2Cache: 1, run: func(r *cwRunner) {
		rng := rand.New(rand.NewPCG(5, 6))
		for i := 0; i < 24; i++ {
			off := rng.Uint64N(4*mib/512-16) * 512
			switch i % 6 {
			case 4:
				r.discard(off, 16*kib)
			case 5:
				r.flush()
			default:
				r.write(off, 6*kib)
			}
		}
	}},
	{name: "compressed", opts: "cluster_size=4k", size: 2 * mib, compressed: true, run: func(r *cwRunner) {
		r.write(4*kib+512, 1024) // copy-on-write from a compressed cluster
		r.write(64*kib, 8*kib)   // whole clusters replace compressed ones
		r.flush()
		r.discard(128*kib, 16*kib) // frees compressed clusters sharing host clusters
		r.zero(256*kib+1024, 1024, false)
		r.zero(300*kib, 8*kib, true)
		r.write(129*kib, 2*kib)
		r.flush()
	}},
	{name: "snapshot", opts: "cluster_size=4k", size: 2 * mib, snapshot: true,
		setup: func(r *cwRunner) { r.write(0, 512*kib) },
		run: func(r *cwRunner) {
			r.write(8*kib+512, 1024) // data cluster shared with the snapshot: copied
			r.write(300*kib, 8*kib)
			r.flush()
			r.discard(64*kib, 16*kib)
			r.zero(100*kib, 4*kib, false)
			r.write(1*mib, 4*kib)
			r.flush()
		}},
	{name: "snapshot-frees", opts: "cluster_size=512", size: 3 * mib, snapshot: true,
		// More pending frees than maxPendingFrees, so that a batch is applied between
		// flushes, right after an L2 table shared with the snapshot was copied.
		setup: func(r *cwRunner) { r.write(0, 1536*kib) },
		run: func(r *cwRunner) {
			r.write(1536*kib, 1536*kib) // new, unshared tables
			r.flush()
			r.write(0, 512) // copies the first L2 table (shared with s1)
			for off := uint64(1024); off < 32*kib; off += 1024 {
				r.discard(off, 512) // frees of clusters s1 shares, through the copy
			}
			for off := uint64(1536*kib + 1024); off < 3*mib; off += 1024 {
				r.discard(off, 512) // every other cluster: frees that do not merge
			}
			r.write(100*kib, 4*kib)
			r.flush()
		}},
	{name: "lazy-frees", opts: "cluster_size=512,lazy_refcounts=on", size: 2 * mib, snapshot: true,
		// A copy-on-write whose free of the old cluster is the maxPendingFrees-th: the batch
		// runs inside the link (found by review, TestL2TableWaitsForDataSyncLazyRefcounts).
		// With lazy refcounts no refcount flush syncs the new cluster's data first.
		setup: func(r *cwRunner) { r.write(0, 1536*kib) },
		run: func(r *cwRunner) {
			for off := uint64(0); off < 1536*kib; off += 32 * kib {
				r.write(off, 512) // copies every L2 table (32 KiB each) now
			}
			r.flush() // and applies their frees
			for off := uint64(1536); r.pendingFrees() < maxPendingFrees-1 && off < 1536*kib; off += 1024 {
				r.discard(off, 512) // one free each (every other cluster: no runs)
			}
			r.markLog()
			r.write(512, 512) // replaces a cluster shared with s1: its free is the last one
			r.write(600*kib, 512)
			r.flush()
		}},
	{name: "concurrent", opts: "cluster_size=4k", size: 2 * mib, l2Cache: 1, concurrent: true, run: func(r *cwRunner) {
		// Four writers; writer w owns the 2 KiB chunks c with c%4 == w, so two writers share
		// every cluster, and the model stays exact per sector.
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 77))
				for i := 0; i < 12; i++ {
					chunk := rng.Uint64N(2*mib/(8*kib))*4 + uint64(w)
					switch i % 6 {
					case 3:
						r.zeroW(w, chunk*2*kib, 2*kib, i%2 == 0)
					case 5:
						r.flushW(w)
					default:
						r.writeW(w, chunk*2*kib, 2*kib)
					}
				}
			}()
		}
		wg.Wait()
		r.flush()
	}},
}

// workloads returns the workloads to run: every one as defined, and in write-through mode
// (cache=writethrough) one of them by default, all of them with -qcow2.crash.full.
func workloads() []*cwWorkload {
	out := append([]*cwWorkload(nil), crashWorkloads...)
	for _, w := range crashWorkloads {
		if *crashFull || w.name == "discard" {
			wt := *w
			wt.name += "-wt"
			wt.writeThrough = true
			out = append(out, &wt)
		}
	}
	return out
}

// cwEnv is a workload's starting point: the image (after setup, closed cleanly), its backing
// file, and the model of both.
type cwEnv struct {
	w        *cwWorkload
	dir      string
	base     *memstore.Store
	bbase    *memstore.Store // backing file; nil without
	init     []uint32
	backing  []uint32
	snapInit []uint32
	ops      []cwOp              // the workload's operations, once run (for checkBitmapState)
	snapGens map[string][]uint32 // internal snapshots taken by setup or run (crash_snapshot_test.go)
	firstGen uint32
	hdr      Header
	mu       sync.Mutex
	nfile    int
	bufs     [][]byte // whole-disk buffers for reuse (getBuf, putBuf)
}

// stampedRaw writes a raw file of size bytes whose sectors hold generation gen, except every
// fourth 64 KiB chunk (left a hole), and returns the per-sector generations.
func stampedRaw(t testing.TB, path string, size uint64, gen uint32) []uint32 {
	t.Helper()
	buf := make([]byte, size)
	gens := make([]uint32, size/sectorSize)
	for sec := range gens {
		if (sec*sectorSize/(64*kib))%4 == 3 {
			continue
		}
		gens[sec] = gen
		stampSector(buf[sec*sectorSize:], uint64(sec), gen)
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Fatal(err)
	}
	return gens
}

func buildEnv(t testing.TB, w *cwWorkload) *cwEnv {
	t.Helper()
	env := &cwEnv{w: w, dir: t.TempDir(), firstGen: 100}
	img := filepath.Join(env.dir, "img.qcow2")
	maxSec := w.max() / sectorSize
	env.init = make([]uint32, maxSec)
	switch {
	case w.backing:
		raw := filepath.Join(env.dir, "backing.raw")
		env.backing = stampedRaw(t, raw, w.size, 1)
		engQemu(t, "qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=64k", raw, filepath.Join(env.dir, "backing.qcow2"))
		engQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", w.opts, "-b", "backing.qcow2", "-F", "qcow2", img, fmt.Sprint(w.size))
		copy(env.init, env.backing)
		s, err := memstore.FromFile(filepath.Join(env.dir, "backing.qcow2"))
		if err != nil {
			t.Fatal(err)
		}
		env.bbase = s
	case w.compressed:
		raw := filepath.Join(env.dir, "data.raw")
		copy(env.init, stampedRaw(t, raw, w.size, 1))
		engQemu(t, "qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", w.opts, raw, img)
	default:
		engQemu(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", w.opts, img, fmt.Sprint(w.size))
	}
	for _, b := range w.bitmaps {
		args := append([]string{"bitmap", "--add"}, b[:len(b)-1]...)
		engQemu(t, "qemu-img", append(args, img, b[len(b)-1])...)
	}
	s, err := memstore.FromFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if w.setup != nil {
		im, err := env.open(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := newRunner(im, nil, 1)
		w.setup(r)
		if err := r.close(); err != nil {
			t.Fatal(err)
		}
		for _, o := range r.snapshotOps() {
			if o.err != nil {
				t.Fatalf("setup: %v", o)
			}
		}
		m := newModel(env.init, env.backing, w.size, r.snapshotOps())
		env.init = m.finalExpect().sets.one
		env.snapGens = r.snaps
		s = s.Reopen().Clone()
	}
	if w.snapshot {
		if err := s.WriteFile(img); err != nil {
			t.Fatal(err)
		}
		engQemu(t, "qemu-img", "snapshot", "-c", "s1", img)
		if s, err = memstore.FromFile(img); err != nil {
			t.Fatal(err)
		}
		env.snapInit = env.init
	}
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	env.hdr = *h
	env.base = s
	if w.compressed {
		im, err := env.open(s.Clone(), nil)
		if err != nil {
			t.Fatal(err)
		}
		ext, err := im.Map(0, im.Size())
		im.Close()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range ext {
			if e.Kind == kindCompressed {
				n++
			}
		}
		if n == 0 {
			t.Fatal("qemu-img convert -c made no compressed cluster")
		}
	}
	return env
}

// open opens an image held in s. The backing file comes from a clone of the backing store,
// given the injector inj (a fault rule shared with the image's store).
func (env *cwEnv) open(s *memstore.Store, inj memstore.Injector, extra ...func(*OpenOptions)) (*Image, error) {
	o := OpenOptions{L2CacheBytes: env.w.l2Cache, WriteThrough: env.w.writeThrough, Opener: func(path string, fo FileOptions) (Storage, error) {
		if env.bbase != nil && filepath.Base(path) == "backing.qcow2" {
			b := env.bbase.Clone()
			if inj != nil {
				b.Inject(inj)
			}
			return b, nil
		}
		return OpenFile(path, fo)
	}}
	for _, f := range extra {
		f(&o)
	}
	return OpenStorage(s, env.dir, o)
}

// file writes a state into the workload's directory (next to the backing file, which qemu-img
// opens too) under a fresh name.
func (env *cwEnv) file(s *memstore.Store) (string, error) {
	env.mu.Lock()
	env.nfile++
	p := filepath.Join(env.dir, fmt.Sprintf("state-%d.qcow2", env.nfile))
	env.mu.Unlock()
	return p, s.WriteFile(p)
}

func (env *cwEnv) model(ops []cwOp) *cwModel {
	return newModel(env.init, env.backing, env.w.size, ops)
}
