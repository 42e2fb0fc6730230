package qcow2

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// BenchmarkScaleRandom measures random 4 KiB writes and reads from 16 goroutines over a
// fresh image of each size: the cost of L2 misses as the image grows (docs/allocation.md).
func BenchmarkScaleRandom(b *testing.B) {
	for _, size := range []string{"1G", "4T"} {
		for _, op := range []string{"write", "read"} {
			b.Run(op+"-"+size, func(b *testing.B) {
				p := engCreate(b, b.TempDir(), "b.qcow2", "cluster_size=64k", size)
				img, err := Open(p, OpenOptions{})
				if err != nil {
					b.Fatal(err)
				}
				defer img.Close()
				vs := int64(img.Size())
				if op == "read" {
					buf := make([]byte, 64<<10)
					for off := int64(0); off < vs; off += 512 << 20 {
						if _, err := img.WriteAt(buf, off); err != nil {
							b.Fatal(err)
						}
					}
					if err := img.Flush(); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(4096)
				b.ResetTimer()
				var wg sync.WaitGroup
				per := b.N/16 + 1
				for g := 0; g < 16; g++ {
					wg.Add(1)
					go func(g int) {
						defer wg.Done()
						rng := rand.New(rand.NewPCG(uint64(g), 2))
						buf := make([]byte, 4096)
						for i := 0; i < per; i++ {
							off := rng.Int64N(vs/4096) * 4096
							var err error
							if op == "write" {
								_, err = img.WriteAt(buf, off)
							} else {
								_, err = img.ReadAt(buf, off)
							}
							if err != nil {
								panic(fmt.Sprint(err))
							}
						}
					}(g)
				}
				wg.Wait()
			})
		}
	}
}
