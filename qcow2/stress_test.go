package qcow2

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// stressBlock is the unit of the shared region: every write there writes whole blocks, each
// stamped with its writer and sequence number, so a torn or misplaced block is detectable.
const stressBlock = 4096

func stamp(b []byte, writer, seq, block uint32) {
	for i := 0; i+16 <= len(b); i += 16 {
		binary.LittleEndian.PutUint32(b[i:], writer+1)
		binary.LittleEndian.PutUint32(b[i+4:], seq)
		binary.LittleEndian.PutUint32(b[i+8:], block)
		binary.LittleEndian.PutUint32(b[i+12:], 0x5afe)
	}
}

// validBlock reports whether b is all zeros or one whole stamp for block.
func validBlock(b []byte, block uint32) bool {
	if bytes.Equal(b, zeroBuf[:len(b)]) {
		return true
	}
	first := b[:16]
	if binary.LittleEndian.Uint32(first[8:]) != block || binary.LittleEndian.Uint32(first[12:]) != 0x5afe {
		return false
	}
	for i := 16; i < len(b); i += 16 {
		if !bytes.Equal(b[i:i+16], first) {
			return false
		}
	}
	return true
}

// TestConcurrentStress runs many goroutines against one image: racing first writes into the
// same unallocated clusters (every sector must survive: one allocation per cluster), private
// regions with reads checked against a per-goroutine model and zeroes/discards, a shared
// region of whole-block overwrites (every block must end up one writer's whole block), and a
// flusher. Run under -race. Afterwards: qemu-img check, and qemu-img compare against what
// was verified.
func TestConcurrentStress(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, opts string }{
		{"4k", "cluster_size=4k"},
		{"64k-extl2", "cluster_size=64k,extended_l2=on"},
		{"512-backing", "cluster_size=512"},
	} {
		t.Run(c.name, func(t *testing.T) { runStress(t, c.opts, c.name == "512-backing") })
	}
}

func runStress(t *testing.T, opts string, withBacking bool) {
	const workers = 32
	const region = 256 << 10 // private bytes per worker
	const shared = 1 << 20
	rounds := 60
	if *longTests {
		rounds = 600
	}
	dir := t.TempDir()
	size := uint64(workers*region + shared + (1 << 20))
	var base []byte
	if withBacking {
		base = make([]byte, size/2)
		for i := range base {
			base[i] = byte(i/512) | 1
		}
		bp := filepath.Join(dir, "base.raw")
		if err := os.WriteFile(bp, base, 0o644); err != nil {
			t.Fatal(err)
		}
		opts += ",backing_file=" + bp + ",backing_fmt=raw"
	}
	p := engCreate(t, dir, "s.qcow2", opts, fmt.Sprint(size))
	img := openTestImage(t, p, OpenOptions{L2CacheBytes: 64 << 10})
	cs := img.geo.ClusterSize()
	v3 := img.Header().Version >= 3
	backingAt := func(off, n uint64) []byte {
		out := make([]byte, n)
		if off < uint64(len(base)) {
			copy(out, base[off:])
		}
		return out
	}

	// Phase 1: racing first writes. All workers write their own sector of the same few
	// unallocated clusters at the same time.
	raceBase := uint64(workers*region + shared)
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, workers*4)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			<-start
			for k := uint64(0); k < 4; k++ {
				off := raceBase + k*cs + uint64(w%int(cs/512))*512 + uint64(w/int(cs/512))*4*cs
				buf := make([]byte, 512)
				stamp(buf, uint32(w), uint32(k), uint32(off/512))
				if _, err := img.WriteAt(buf, int64(off)); err != nil {
					errs <- err
				}
			}
		}(w)
	}
	close(start)
	wg.Wait()

	// Phase 2: private regions, shared blocks, a flusher.
	models := make([][]byte, workers)
	var done sync.WaitGroup
	stop := make(chan struct{})
	done.Add(1)
	go func() {
		defer done.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := img.Flush(); err != nil {
				errs <- fmt.Errorf("flush: %w", err)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			lo := uint64(w) * region
			m := backingAt(lo, region)
			models[w] = m
			for r := 0; r < rounds; r++ {
				off := rng.Uint64N(region - 1)
				n := min(rng.Uint64N(3*cs)+1, region-off)
				switch rng.IntN(6) {
				case 0, 1:
					buf := make([]byte, n)
					for i := range buf {
						buf[i] = byte(w) ^ byte(r) ^ byte(i>>9)
					}
					if _, err := img.WriteAt(buf, int64(lo+off)); err != nil {
						errs <- err
						return
					}
					copy(m[off:], buf)
				case 2:
					got := make([]byte, n)
					if _, err := img.ReadAt(got, int64(lo+off)); err != nil {
						errs <- err
						return
					}
					if !bytes.Equal(got, m[off:off+n]) {
						errs <- fmt.Errorf("worker %d: read %d+%d: %s", w, lo+off, n, engFirstDiff(got, m[off:off+n]))
						return
					}
				case 3:
					if err := img.Zero(GuestOffset(lo+off), n, unmapFlag(rng.IntN(2) == 0)); err != nil {
						errs <- err
						return
					}
					clear(m[off : off+n])
				case 4:
					// Shared region: whole stamped blocks, overlapping other workers.
					blk := uint32(rng.IntN(shared / stressBlock))
					nb := uint32(rng.IntN(3) + 1)
					if int(blk+nb) > shared/stressBlock {
						nb = uint32(shared/stressBlock) - blk
					}
					buf := make([]byte, int(nb)*stressBlock)
					for i := uint32(0); i < nb; i++ {
						stamp(buf[i*stressBlock:(i+1)*stressBlock], uint32(w), uint32(r), blk+i)
					}
					if _, err := img.WriteAt(buf, int64(workers*region+uint64(blk)*stressBlock)); err != nil {
						errs <- err
						return
					}
				case 5:
					// Discard whole clusters of the private region (cluster aligned region).
					a := alignUp(off, cs)
					if a+cs <= region {
						if err := img.Discard(GuestOffset(lo+a), cs); err != nil {
							errs <- err
							return
						}
						copy(m[a:a+cs], backingAt(lo+a, cs))
						if v3 || base == nil {
							clear(m[a : a+cs])
						}
					}
				}
			}
		}(w)
	}
	wg.Wait()
	close(stop)
	done.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	// Verify everything and build the expected raw image.
	got := engReadAll(t, img)
	want := make([]byte, size)
	copy(want, backingAt(0, size))
	for w := 0; w < workers; w++ {
		copy(want[uint64(w)*region:], models[w])
	}
	for b := uint32(0); b < shared/stressBlock; b++ {
		off := workers*region + int(b)*stressBlock
		blk := got[off : off+stressBlock]
		orig := want[off : off+stressBlock]
		if !validBlock(blk, b) && !bytes.Equal(blk, orig) {
			t.Fatalf("shared block %d is torn or misplaced", b)
		}
		copy(orig, blk)
	}
	for w := 0; w < workers; w++ {
		for k := uint64(0); k < 4; k++ {
			off := raceBase + k*cs + uint64(w%int(cs/512))*512 + uint64(w/int(cs/512))*4*cs
			stamp(want[off:off+512], uint32(w), uint32(k), uint32(off/512))
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("contents differ from the model: %s", engFirstDiff(got, want))
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	corpus.RequireClean(t, p)
	raw := filepath.Join(dir, "want.raw")
	if err := os.WriteFile(raw, want, 0o644); err != nil {
		t.Fatal(err)
	}
	engCompare(t, p, raw)
}
