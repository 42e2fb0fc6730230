package qcow2

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// TestCorpusReads opens every qcow2 image of the shared corpus (built by QEMU's tools) and
// reads it through the engine: every byte of every data extent, and the start and end of
// every zero extent, must equal what the corpus says the image holds; internal snapshots read
// as they were; and on images up to 256 MiB, Map agrees with qemu-img map on which bytes are
// data and which read as zeros.
func TestCorpusReads(t *testing.T) {
	for _, ci := range corpus.Shared(t) {
		if ci.Format != "qcow2" {
			continue
		}
		t.Run(ci.Name, func(t *testing.T) {
			t.Parallel()
			img, err := Open(ci.Path, OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			if img.Size() != uint64(ci.Size) {
				t.Fatalf("size %d, corpus says %d", img.Size(), ci.Size)
			}
			corpusCompare(t, img, ci.Expected)
			for _, sn := range ci.Snapshots() {
				s, err := Open(ci.Path, OpenOptions{Snapshot: sn})
				if err != nil {
					t.Fatalf("snapshot %s: %v", sn, err)
				}
				corpusCompare(t, s, func(off int64, p []byte) { ci.ExpectedSnapshot(sn, off, p) })
				s.Close()
			}
			if ci.Size <= 256<<20 {
				engCompareMap(t, img, ci.Path)
			}
		})
	}
}

// corpusCompare reads img along its own map and compares with want.
func corpusCompare(t *testing.T, img *Image, want func(off int64, p []byte)) {
	t.Helper()
	ext, err := img.Map(0, img.Size())
	if err != nil {
		t.Fatal(err)
	}
	const sample, chunk = 1 << 20, 4 << 20
	// One pair of buffers for the whole image: fresh 4 MiB buffers per chunk cost most of the
	// time under -race (page faults on the race detector's shadow memory).
	gotBuf, expBuf := make([]byte, chunk), mappedScratch(t, chunk)
	check := func(off, n uint64) {
		for n > 0 {
			k := min(n, chunk)
			got, exp := gotBuf[:k], expBuf[:k]
			if _, err := img.ReadAt(got, int64(off)); err != nil {
				t.Fatalf("read %d+%d: %v", off, k, err)
			}
			want(int64(off), exp)
			if !bytes.Equal(got, exp) {
				t.Fatalf("read at %d: %s", off, engFirstDiff(got, exp))
			}
			off, n = off+k, n-k
		}
	}
	for _, e := range ext {
		if e.Length <= 2*sample || e.Kind == kindData || e.Kind == kindCompressed {
			check(e.Start, e.Length)
			continue
		}
		check(e.Start, sample)
		check(e.Start+e.Length-sample, sample)
	}
}

// TestCorpusWrites copies each small corpus image and runs random writes, zeroes, discards
// and flushes on it through the engine against a model built from the corpus's expected
// contents; then qemu-img check must find it clean and qemu-img compare equal to the model.
func TestCorpusWrites(t *testing.T) {
	ops := 60
	if *longTests {
		ops = 600
	}
	for i, ci := range corpus.Shared(t) {
		if ci.Format != "qcow2" || ci.Size > 64<<20 || ci.Has(corpus.FeatureDirty) {
			continue
		}
		t.Run(ci.Name, func(t *testing.T) {
			t.Parallel()
			cp, err := corpus.Copy(context.Background(), ci, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			raw := filepath.Join(t.TempDir(), "model.raw")
			model := mappedFile(t, raw, int(ci.Size)) // the model is the raw file qemu-img compares with
			ci.Expected(0, model)
			var backing []byte
			if ci.Backing != nil {
				backing = mappedScratch(t, int(ci.Size))
				ci.Backing.Expected(0, backing)
			}
			img := openTestImage(t, cp.Path, OpenOptions{})
			m := &propModel{shadow: model, backing: backing, cs: img.geo.ClusterSize(), v2: img.Header().Version < 3}
			rng := rand.New(rand.NewPCG(uint64(i), 5))
			size := uint64(ci.Size)
			for k := 0; k < ops; k++ {
				off, n := propRange(rng, size, m.cs)
				switch rng.IntN(5) {
				case 0, 1:
					b := engPattern(int(n), byte(k+1))
					engWrite(t, img, int64(off), b)
					copy(model[off:], b)
				case 2:
					if err := img.Zero(GuestOffset(off), n, unmapFlag(rng.IntN(2) == 0)); err != nil {
						t.Fatal(err)
					}
					clear(model[off : off+n])
				case 3:
					if err := img.Discard(GuestOffset(off), n); err != nil {
						t.Fatal(err)
					}
					m.discard(off, n)
				default:
					got := make([]byte, n)
					if _, err := img.ReadAt(got, int64(off)); err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, model[off:off+n]) {
						t.Fatalf("op %d: read %d+%d: %s", k, off, n, engFirstDiff(got, model[off:off+n]))
					}
				}
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			corpus.RequireClean(t, cp.Path)
			engCompare(t, cp.Path, raw)
		})
	}
}

// TestCorpusDirtyRepairedOnOpen: the corpus's dirty lazy-refcounts image (left by a killed
// qemu-io) opens read-only as it is, and read-write only after its refcounts are rebuilt:
// then qemu-img check finds it clean and the data is intact.
func TestCorpusDirtyRepairedOnOpen(t *testing.T) {
	dirty := corpus.WithFeature(corpus.Shared(t), corpus.FeatureDirty)
	if len(dirty) == 0 {
		t.Fatal("the corpus has no dirty image")
	}
	for _, ci := range dirty {
		cp, err := corpus.Copy(context.Background(), ci, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		ro, err := Open(cp.Path, OpenOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if h := ro.Header(); !h.Dirty() {
			t.Fatal("corpus image is not dirty")
		}
		corpusCompare(t, ro, ci.Expected)
		ro.Close()
		img := openTestImage(t, cp.Path, OpenOptions{})
		if h := img.Header(); h.Dirty() {
			t.Fatal("still dirty after a read-write open")
		}
		corpusCompare(t, img, ci.Expected)
		engWrite(t, img, 0, engPattern(4096, 3))
	}
}
