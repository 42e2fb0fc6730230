package qcow2

import (
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
				randomIO4k(b, img, 16, b.N/16+1, 2, vs, op == "write")
			})
		}
	}
}
