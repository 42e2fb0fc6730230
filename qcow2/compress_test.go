package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestDecompressQemuImages decompresses every compressed cluster of images written by
// `qemu-img convert -c` (zlib and zstd, cluster sizes 512 B to 2 MiB) by walking L1/L2 with
// the header and entry helpers, and compares each with `qemu-img convert -O raw`.
func TestDecompressQemuImages(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, ctype := range []string{"zlib", "zstd"} {
		for _, cbits := range []uint32{9, 12, 16, 21} {
			t.Run(fmt.Sprintf("%s-%d", ctype, 1<<cbits), func(t *testing.T) {
				cs := 1 << cbits
				clusters := 12
				if cbits == 21 {
					clusters = 5
				}
				src := testPattern(uint64(cbits), cs*clusters)
				raw := writeTemp(t, dir, fmt.Sprintf("src-%s-%d.raw", ctype, cbits), src)
				img := filepath.Join(dir, fmt.Sprintf("c-%s-%d.qcow2", ctype, cbits))
				qemuImg(t, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o",
					fmt.Sprintf("cluster_size=%d,compression_type=%s", cs, ctype), raw, img)
				back := filepath.Join(dir, fmt.Sprintf("back-%s-%d.raw", ctype, cbits))
				qemuImg(t, "convert", "-f", "qcow2", "-O", "raw", img, back)
				want, err := os.ReadFile(back)
				if err != nil {
					t.Fatal(err)
				}
				s := openStorage(t, img)
				h, err := ReadHeader(s)
				if err != nil {
					t.Fatal(err)
				}
				wantType := map[string]uint8{"zlib": CompressionZlib, "zstd": CompressionZstd}[ctype]
				if h.CompressionType != wantType {
					t.Fatalf("compression type %d", h.CompressionType)
				}
				g := h.Geometry()
				n := 0
				dst := make([]byte, cs)
				forEachL2Entry(t, s, h, h.L1TableOffset, h.L1Size, func(c guestCluster, e l2Entry) {
					if !e.Compressed() {
						return
					}
					n++
					off, length := e.compressedRange(g)
					data := readFull(t, s, off, length)
					if err := decompress(h.CompressionType, data, dst); err != nil {
						t.Fatalf("cluster %d: %v", c, err)
					}
					g0 := uint64(c.Offset(g))
					if !bytes.Equal(dst, want[g0:g0+uint64(cs)]) {
						t.Fatalf("cluster %d decompresses to different data than qemu-img reads", c)
					}
				})
				if n < clusters/3 {
					t.Fatalf("only %d of %d clusters are compressed; the test image is not what it should be", n, clusters)
				}
			})
		}
	}
}

func zlibBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	out, err := compress(CompressionZlib, b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func zstdFrame(t *testing.T, b []byte) []byte {
	t.Helper()
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return enc.EncodeAll(b, nil)
}

// TestDecompressBoundaries checks QEMU's acceptance rules at the edges of a cluster.
func TestDecompressBoundaries(t *testing.T) {
	const cs = 4096
	cluster := testPattern(1, cs)
	cluster[0] = 'x' // make sure it is not all one run
	two := append(append([]byte(nil), cluster...), testPattern(2, cs)...)
	garbage := []byte("this is not compressed data at all, it is a sentence.")
	cases := []struct {
		name  string
		ctype uint8
		src   []byte
		ok    bool // decodes, and dst then equals cluster
	}{
		{"zlib exact", CompressionZlib, zlibBytes(t, cluster), true},
		{"zlib with trailing sector bytes", CompressionZlib, append(zlibBytes(t, cluster), garbage...), true},
		// QEMU accepts a stream that would produce more than a cluster and stops at the
		// cluster (inflate returns Z_BUF_ERROR with a full output buffer); so do we.
		{"zlib longer than a cluster", CompressionZlib, zlibBytes(t, two), true},
		{"zlib short by one byte", CompressionZlib, zlibBytes(t, cluster[:cs-1]), false},
		{"zlib truncated input", CompressionZlib, zlibBytes(t, cluster)[:len(zlibBytes(t, cluster))/2], false},
		{"zlib empty input", CompressionZlib, nil, false},
		{"zlib garbage", CompressionZlib, garbage, false},
		{"zstd exact", CompressionZstd, zstdFrame(t, cluster), true},
		{"zstd with trailing garbage", CompressionZstd, append(zstdFrame(t, cluster), garbage...), true},
		{"zstd followed by another frame", CompressionZstd, append(zstdFrame(t, cluster), zstdFrame(t, cluster)...), true},
		{"zstd two half frames", CompressionZstd, append(zstdFrame(t, cluster[:cs/2]), zstdFrame(t, cluster[cs/2:])...), true},
		{"zstd empty frame then data", CompressionZstd, append(zstdFrame(t, nil), zstdFrame(t, cluster)...), true},
		{"zstd skippable then data", CompressionZstd, append([]byte{0x5a, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3}, zstdFrame(t, cluster)...), true},
		// QEMU fails when the output is full but the frame is not finished.
		{"zstd longer than a cluster", CompressionZstd, zstdFrame(t, two), false},
		{"zstd short by one byte", CompressionZstd, zstdFrame(t, cluster[:cs-1]), false},
		{"zstd short then garbage", CompressionZstd, append(zstdFrame(t, cluster[:cs/2]), garbage...), false},
		{"zstd truncated input", CompressionZstd, zstdFrame(t, cluster)[:len(zstdFrame(t, cluster))-5], false},
		{"zstd empty input", CompressionZstd, nil, false},
		{"zstd garbage", CompressionZstd, garbage, false},
		{"zstd truncated skippable", CompressionZstd, []byte{0x50, 0x2a, 0x4d, 0x18, 200, 0, 0, 0, 1}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := make([]byte, cs)
			err := decompress(c.ctype, c.src, dst)
			if c.ok {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(dst, cluster) {
					t.Fatal("wrong data")
				}
				return
			}
			if !errors.Is(err, ErrCompressedData) || !errors.Is(err, syscall.EIO) || errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCompressedData (EIO, not ErrCorrupt)", err)
			}
		})
	}
	if err := decompress(7, nil, make([]byte, cs)); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("unknown type: %v", err)
	}
}

// TestZstdHugeWindowBounded: a frame header claiming a 128 MiB window (the largest accepted)
// decodes a small cluster without allocating anything near the window size, and a larger
// window is refused.
func TestZstdHugeWindowBounded(t *testing.T) {
	const cs = 64 << 10
	raw := func(windowByte byte) []byte {
		// Frame: magic, FHD 0 (no FCS, not single segment, no checksum, no dictionary),
		// Window_Descriptor, then one last raw block of cs bytes.
		f := binary.LittleEndian.AppendUint32(nil, zstdMagic)
		f = append(f, 0, windowByte)
		bh := uint32(cs)<<3 | 1 // Last_Block, Raw_Block
		f = append(f, byte(bh), byte(bh>>8), byte(bh>>16))
		return append(f, bytes.Repeat([]byte{7}, cs)...)
	}
	dst := make([]byte, cs)
	src := raw(17 << 3) // exponent 17: 1 KiB << 17 = 128 MiB
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := 0; i < 10; i++ {
		if err := decompress(CompressionZstd, src, dst); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Fatalf("10 decodes with a 128 MiB window allocated %d MiB", alloc>>20)
	}
	if !bytes.Equal(dst, bytes.Repeat([]byte{7}, cs)) {
		t.Fatal("wrong data")
	}
	if err := decompress(CompressionZstd, raw(18<<3), dst); !errors.Is(err, ErrCompressedData) {
		t.Fatalf("256 MiB window: %v", err)
	}
}

// TestCompressRoundTrip: what compress produces decodes to the input, and incompressible
// data is reported as such.
func TestCompressRoundTrip(t *testing.T) {
	for _, ctype := range []uint8{CompressionZlib, CompressionZstd} {
		for _, cs := range []int{512, 4096, 65536, 2 << 20} {
			src := testPattern(uint64(cs), cs)
			src[0] = 'q'
			for k := 0; k < cs; k += 3 {
				src[k] = 'a' // compressible whatever the pattern drew
			}
			out, err := compress(ctype, src)
			if err != nil {
				t.Fatalf("type %d, %d: %v", ctype, cs, err)
			}
			dst := make([]byte, cs)
			if err := decompress(ctype, out, dst); err != nil || !bytes.Equal(dst, src) {
				t.Fatalf("type %d, %d bytes: round trip failed (%v)", ctype, cs, err)
			}
			if _, err := compress(ctype, randomBytes(cs)); !errors.Is(err, errIncompressible) {
				t.Fatalf("type %d: random data: %v, want errIncompressible", ctype, err)
			}
		}
	}
	if _, err := compress(9, []byte("x")); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("unknown type: %v", err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(testRand.Uint32())
	}
	return b
}

// TestQemuReadsOurCompression builds an image by hand whose clusters hold our compressed data
// (packed at unaligned byte offsets, as QEMU packs them) and checks that qemu-img reads back
// the original data. The refcounts of the added clusters are not updated, which qemu-img
// convert does not look at.
func TestQemuReadsOurCompression(t *testing.T) {
	for _, ctype := range []string{"zlib", "zstd"} {
		t.Run(ctype, func(t *testing.T) {
			dir := t.TempDir()
			img := filepath.Join(dir, "hand.qcow2")
			const cs = 65536
			const clusters = 4
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536,compression_type="+ctype, img, fmt.Sprint(cs*clusters))
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			s := NewFileStorage(f)
			h, err := ReadHeader(s)
			if err != nil {
				t.Fatal(err)
			}
			g := h.Geometry()
			size, _ := s.Size()
			l2Off := HostOffset((uint64(size) + cs - 1) &^ (cs - 1))
			data := l2Off.Add(cs) + 100 // deliberately not sector aligned
			want := make([]byte, cs*clusters)
			l2 := make([]byte, cs)
			for i := 0; i < clusters; i++ {
				src := testPattern(uint64(40+i), cs)
				for k := 0; k < cs; k += 2 {
					src[k] = byte(i)
				}
				copy(want[i*cs:], src)
				out, err := compress(h.CompressionType, src)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.WriteAt(out, int64(data)); err != nil {
					t.Fatal(err)
				}
				binary.BigEndian.PutUint64(l2[i*8:], uint64(makeCompressedL2Entry(g, data, uint64(len(out)))))
				data = data.Add(uint64(len(out)))
			}
			if _, err := s.WriteAt(l2, int64(l2Off)); err != nil {
				t.Fatal(err)
			}
			l1 := binary.BigEndian.AppendUint64(nil, uint64(makeL1Entry(l2Off, false)))
			if _, err := s.WriteAt(l1, int64(h.L1TableOffset)); err != nil {
				t.Fatal(err)
			}
			back := filepath.Join(dir, "back.raw")
			qemuImg(t, "convert", "-f", "qcow2", "-O", "raw", img, back)
			got, err := os.ReadFile(back)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatal("qemu-img reads different data from our compressed clusters")
			}
		})
	}
}

func BenchmarkDecompress(b *testing.B) {
	for _, ctype := range []uint8{CompressionZlib, CompressionZstd} {
		src := testPattern(5, 64<<10)
		out, err := compress(ctype, src)
		if err != nil {
			b.Fatal(err)
		}
		dst := make([]byte, len(src))
		b.Run(fmt.Sprint("type", ctype), func(b *testing.B) {
			b.SetBytes(int64(len(src)))
			b.ReportAllocs()
			for b.Loop() {
				if err := decompress(ctype, out, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
