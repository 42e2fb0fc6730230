package qcow2

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// BenchmarkEngineWrite measures allocating sequential writes (1 MiB requests) into a new
// image, and random 4 KiB writes and reads from 8 goroutines into an allocated one.
func BenchmarkEngineWrite(b *testing.B) {
	for _, cs := range []string{"64k", "4k"} {
		b.Run("seq1M-"+cs, func(b *testing.B) {
			p := engCreate(b, b.TempDir(), "b.qcow2", "cluster_size="+cs, "64G")
			img, err := Open(p, OpenOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer img.Close()
			buf := make([]byte, 1<<20)
			fillPattern(buf, 1)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := img.WriteAt(buf, int64(i)<<20); err != nil {
					b.Fatal(err)
				}
			}
			if err := img.Flush(); err != nil {
				b.Fatal(err)
			}
		})
	}
	for _, op := range []string{"randwrite4k", "randread4k"} {
		b.Run(op, func(b *testing.B) {
			p := engCreate(b, b.TempDir(), "b.qcow2", "cluster_size=64k", "1G")
			engQemu(b, "qemu-io", "-c", "write -P 1 0 256M", p)
			img, err := Open(p, OpenOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer img.Close()
			b.SetBytes(4096)
			b.ResetTimer()
			randomIO4k(b, img, 8, b.N/8+1, 1, 256<<20, op == "randwrite4k")
		})
	}
}

// randomIO4k runs n goroutines that each write (or read) per random 4 KiB blocks of img's
// first span bytes, seeded by seed and the goroutine's number; an I/O error panics.
func randomIO4k(b *testing.B, img *Image, n, per int, seed uint64, span int64, write bool) {
	b.Helper()
	var wg sync.WaitGroup
	for g := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), seed))
			buf := make([]byte, 4096)
			for range per {
				off := rng.Int64N(span/4096) * 4096
				var err error
				if write {
					_, err = img.WriteAt(buf, off)
				} else {
					_, err = img.ReadAt(buf, off)
				}
				if err != nil {
					panic(fmt.Sprint(err))
				}
			}
		}()
	}
	wg.Wait()
}
