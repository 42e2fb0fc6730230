package qcow2

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkBitmapRandWrite4k measures random 4 KiB writes from 8 goroutines into an allocated
// image with 0, 1 and 4 enabled persistent bitmaps (64 KiB granularity), and reports each
// case's time per write relative to the one without bitmaps, measured in the same run
// ("ratio"; the goal in docs/bitmaps.md is at most 1.05).
func BenchmarkBitmapRandWrite4k(b *testing.B) {
	var base time.Duration
	for _, n := range []int{0, 1, 4} {
		b.Run(fmt.Sprintf("bitmaps=%d", n), func(b *testing.B) {
			p := engCreate(b, b.TempDir(), "b.qcow2", "cluster_size=64k", "1G")
			engQemu(b, "qemu-io", "-c", "write -P 1 0 256M", p)
			for i := range n {
				engQemu(b, "qemu-img", "bitmap", "--add", p, fmt.Sprintf("b%d", i))
			}
			img, err := Open(p, OpenOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer img.Close()
			if len(img.markBitmaps) != n {
				b.Fatalf("%d enabled bitmaps loaded, want %d", len(img.markBitmaps), n)
			}
			b.SetBytes(4096)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			per := b.N/8 + 1
			for g := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(g), 1))
					buf := make([]byte, 4096)
					for range per {
						if _, err := img.WriteAt(buf, int64(rng.IntN(256<<20/4096))*4096); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			perOp := time.Since(start) / time.Duration(8*per)
			if n == 0 {
				base = perOp
			} else if base > 0 {
				b.ReportMetric(float64(perOp)/float64(base), "ratio")
			}
		})
	}
}

// BenchmarkBitmapMark is the marking alone, which is all the bitmaps add to a write: 8
// goroutines marking random 4 KiB ranges in 4 enabled bitmaps of a 1 TiB disk.
func BenchmarkBitmapMark(b *testing.B) {
	img := &Image{}
	for range 4 {
		bm := newDirtyBitmap(bitmapEntry{granBits: 16, flags: bitmapFlagAuto}, 1<<40)
		bm.words = make([]atomic.Uint64, bitmapWords(1<<40, 16))
		img.bitmaps = append(img.bitmaps, bm)
	}
	img.refreshEnabledBitmaps()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			img.markDirty(rng.Uint64N(1<<40/4096)*4096, 4096)
		}
	})
}
