// Compressed writes checked with QEMU: images we write compressed read back right in qemu-img,
// the data is packed byte by byte across host clusters, and full clusters are refused.
package qcow2

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// compressibleCluster is text-like data that deflates to a fraction of its size.
func compressibleCluster(r *rand.Rand, n int) []byte {
	words := []string{"qcow2 ", "cluster ", "snapshot ", "refcount ", "L2 ", "\n", "deflate "}
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
	}
	return b.Bytes()[:n]
}

func TestCompressedWritesAreReadByQemu(t *testing.T) {
	for _, opts := range []string{"cluster_size=4096", "cluster_size=65536,compression_type=zstd", "extended_l2=on,cluster_size=16384", "compat=0.10,cluster_size=4096"} {
		t.Run(opts, func(t *testing.T) {
			p := engCreate(t, t.TempDir(), "c.qcow2", opts, "1M")
			img := openTestImage(t, p, OpenOptions{})
			cs := int(img.geo.ClusterSize())
			r := rand.New(rand.NewPCG(1, 2))
			want := make([]byte, img.Size())
			ncomp := 0
			for off := 0; off+cs <= len(want); off += cs {
				var cl []byte
				kind := (off / cs) % 4
				if off < len(want)/2 {
					kind = 0 // a long run: the packing must cross cluster boundaries
				}
				switch kind {
				case 0, 1:
					cl = compressibleCluster(r, cs)
				case 2:
					cl = make([]byte, cs)
					for i := range cl {
						cl[i] = byte(r.Uint32()) // does not shrink
					}
				case 3:
					continue // stays unallocated
				}
				copy(want[off:], cl)
				z, err := img.CompressCluster(cl)
				if errors.Is(err, ErrIncompressible) {
					snapWrite(t, img, int64(off), cl)
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := img.WriteCompressedAt(uint64(off), z); err != nil {
					t.Fatal(err)
				}
				ncomp++
			}
			if ncomp == 0 {
				t.Fatal("nothing compressed")
			}
			if got := engReadAll(t, img); !bytes.Equal(got, want) {
				t.Fatalf("read back through the engine: %s", engFirstDiff(got, want))
			}
			// Packed byte by byte: each compressed cluster starts where the previous one
			// ended (sectors are not rounded), and some run across a host cluster boundary.
			var prevEnd HostOffset
			crossed, packed := 0, 0
			for off := 0; off < len(want); off += cs {
				m, err := img.Map(GuestOffset(uint64(off)), uint64(cs))
				if err != nil {
					t.Fatal(err)
				}
				if m[0].Kind != kindCompressed {
					continue
				}
				img.mu.Lock()
				c, _, _ := img.l2For(GuestOffset(off).l1Index(img.geo))
				t2, _ := img.l2GetAll(c)
				e := t2.get(GuestOffset(off).l2Index(img.geo)).e
				img.mu.Unlock()
				host, _ := e.compressedRange(img.geo)
				if host == prevEnd {
					packed++
				}
				z, _ := img.CompressCluster(want[off : off+cs])
				prevEnd = host.Add(uint64(len(z)))
				if host.cluster(img.geo) != prevEnd.Add(^uint64(0)).cluster(img.geo) {
					crossed++
				}
			}
			if packed == 0 || (cs == 4096 && crossed == 0) {
				t.Errorf("compressed data not packed as QEMU packs it: %d follow their predecessor, %d cross a cluster boundary", packed, crossed)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			corpus.RequireClean(t, p)
			if got := engConvertRaw(t, p); !bytes.Equal(got, want) {
				t.Fatalf("qemu-img reads: %s", engFirstDiff(got, want))
			}
		})
	}
}

func TestCompressedWriteRefusesAllocatedClusters(t *testing.T) {
	p := engCreate(t, t.TempDir(), "c.qcow2", "cluster_size=4096", "1M")
	img := openTestImage(t, p, OpenOptions{})
	snapWrite(t, img, 0, bytes.Repeat([]byte{1}, 4096))
	z, err := img.CompressCluster(bytes.Repeat([]byte{2}, 4096))
	if err != nil {
		t.Fatal(err)
	}
	if err := img.WriteCompressedAt(0, z); !errors.Is(err, syscall.EIO) {
		t.Fatalf("compressed write over data: %v, want EIO", err)
	}
	if err := img.WriteCompressedAt(512, z); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("unaligned compressed write: %v, want EINVAL", err)
	}
	if err := img.WriteCompressedAt(4096, z); err != nil {
		t.Fatal(err)
	}
	if err := img.WriteCompressedAt(4096, z); !errors.Is(err, syscall.EIO) {
		t.Fatalf("compressed write over compressed: %v, want EIO", err)
	}
}
