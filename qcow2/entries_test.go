package qcow2

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

func TestL1Entry(t *testing.T) {
	for _, c := range []struct {
		e        l1Entry
		off      HostOffset
		copied   bool
		reserved uint64
	}{
		{0, 0, false, 0},
		{l1Entry(0x8000000000050000), 0x50000, true, 0},
		{l1Entry(0x00fffffffffffe00), 0x00fffffffffffe00, false, 0},
		{l1Entry(0x0100000000000001), 0, false, 0x0100000000000001}, // bit 56 and bit 0 reserved
		{l1Entry(0x7f000000000001ff), 0, false, 0x7f000000000001ff},
	} {
		if c.e.l2Offset() != c.off || c.e.copied() != c.copied || c.e.reserved() != c.reserved {
			t.Errorf("%#x: offset %v copied %v reserved %#x", uint64(c.e), c.e.l2Offset(), c.e.copied(), c.e.reserved())
		}
	}
	if e := makeL1Entry(0x30000, true); uint64(e) != 0x8000000000030000 {
		t.Errorf("MakeL1Entry = %#x", uint64(e))
	}
	// Bits outside 9..55 of the offset never leak into other fields.
	if e := makeL1Entry(HostOffset(^uint64(0)), false); e.copied() || e.reserved() != 0 {
		t.Errorf("MakeL1Entry with a wild offset set other bits: %#x", uint64(e))
	}
}

func TestL2Entry(t *testing.T) {
	for _, c := range []struct {
		e                        l2Entry
		off                      HostOffset
		copied, zero, compressed bool
		reserved                 uint64
	}{
		{0, 0, false, false, false, 0},
		{l2Entry(0x8000000000070000), 0x70000, true, false, false, 0},
		{l2Entry(0x8000000000070001), 0x70000, true, true, false, 0},
		{l2Entry(0x0000000000000001), 0, false, true, false, 0},
		{l2Entry(0x0000000000070002), 0x70000, false, false, false, 2},
		{l2Entry(0x3f00000000000000), 0, false, false, false, 0x3f00000000000000},
		// Compressed: bit 0 is part of the offset, not the zero flag; no reserved bits.
		{l2Entry(0x4000000000012345), 0, false, false, true, 0},
	} {
		if c.e.Compressed() != c.compressed || c.e.copied() != c.copied || c.e.Zero() != c.zero || c.e.reserved() != c.reserved {
			t.Errorf("%#x: compressed %v copied %v zero %v reserved %#x", uint64(c.e), c.e.Compressed(), c.e.copied(), c.e.Zero(), c.e.reserved())
		}
		if !c.compressed && c.e.Offset() != c.off {
			t.Errorf("%#x: offset %v", uint64(c.e), c.e.Offset())
		}
	}
	if e := makeL2Entry(0x20000, true, true); uint64(e) != 0x8000000000020001 {
		t.Errorf("MakeL2Entry = %#x", uint64(e))
	}
}

// TestCompressedRange round-trips makeCompressedL2Entry through compressedRange for every
// cluster size, at offsets up to the largest the descriptor holds, and checks the range
// against the spec: it starts at the byte offset, ends at a sector boundary and covers the
// data.
func TestCompressedRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 9))
	for cb := uint32(minClusterBits); cb <= maxClusterBits; cb++ {
		g := Geometry{ClusterBits: cb}
		x := 62 - (cb - 8)
		maxOff := uint64(1)<<min(x, 56) - 1 // "upper bits [beyond 55] must be set to 0"
		for i := 0; i < 500; i++ {
			off := rng.Uint64N(maxOff)
			if i == 0 {
				off = maxOff - g.ClusterSize()*2
			}
			n := 1 + rng.Uint64N(g.ClusterSize()-1) // QEMU stores at most cluster_size-1 bytes
			e := makeCompressedL2Entry(g, HostOffset(off), n)
			if !e.Compressed() || e.copied() {
				t.Fatalf("cb %d: entry %#x flags wrong", cb, uint64(e))
			}
			gotOff, length := e.compressedRange(g)
			if uint64(gotOff) != off || length < n || (off+length)%512 != 0 || length-n >= 512 {
				t.Fatalf("cb %d off %#x n %d: range %v+%d", cb, off, n, gotOff, length)
			}
			// The COPIED bit of an entry read from disk does not change the range.
			if o2, l2 := (e | l2Entry(entryCopied)).compressedRange(g); o2 != gotOff || l2 != length {
				t.Fatalf("cb %d: COPIED changes the range", cb)
			}
		}
	}
}

// TestCompressedRangeQemu checks compressedRange against the entries qemu-img writes: the
// compressed data of consecutive clusters is packed, so each range must start at or after the
// previous one's start and every range must lie inside the file.
func TestCompressedRangeQemu(t *testing.T) {
	dir := t.TempDir()
	raw := writeTemp(t, dir, "src.raw", testPattern(21, 64*4096))
	img := filepath.Join(dir, "c.qcow2")
	qemuImg(t, "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096", raw, img)
	s := openStorage(t, img)
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := s.Size()
	g := h.Geometry()
	var prevEnd uint64
	n := 0
	forEachL2Entry(t, s, h, h.L1TableOffset, h.L1Size, func(c guestCluster, e l2Entry) {
		if !e.Compressed() {
			return
		}
		n++
		off, length := e.compressedRange(g)
		if uint64(off) < prevEnd-min(prevEnd, 511) || uint64(off)+length > uint64(size)+511 {
			t.Fatalf("cluster %d: range %v+%d after %d in a %d-byte file", c, off, length, prevEnd, size)
		}
		prevEnd = uint64(off) + length
	})
	if n == 0 {
		t.Fatal("no compressed clusters")
	}
}

// TestRefBlockAgainstQemu reads the first refcount block of images qemu-img made with every
// refcount width and checks that Get returns 1 for each cluster qemu-img allocated (header,
// reftable, refblock, L1) and 0 after them: the sub-byte widths count from the least
// significant bit, as the spec says.
func TestRefBlockAgainstQemu(t *testing.T) {
	dir := t.TempDir()
	for order := uint32(0); order <= maxRefcountOrder; order++ {
		t.Run(fmt.Sprint("bits", 1<<order), func(t *testing.T) {
			img := filepath.Join(dir, fmt.Sprintf("r%d.qcow2", order))
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", fmt.Sprintf("cluster_size=4096,refcount_bits=%d", 1<<order), img, "1M")
			s := openStorage(t, img)
			h, err := ReadHeader(s)
			if err != nil {
				t.Fatal(err)
			}
			if h.RefcountOrder != order {
				t.Fatalf("refcount order %d", h.RefcountOrder)
			}
			rt := readFull(t, s, h.RefTableOffset, 8)
			rb := RefBlock{Data: readFull(t, s, refTableEntry(binary.BigEndian.Uint64(rt)).Offset(), h.ClusterSize()), Order: order}
			size, _ := s.Size()
			used := uint64(h.Geometry().clustersFor(uint64(size))) // the last cluster (the L1 table) may be partly written
			for i := uint64(0); i < used+8; i++ {
				want := refcount(0)
				if i < used {
					want = 1
				}
				if got := rb.Get(refBlockIndex(i)); got != want {
					t.Fatalf("cluster %d: refcount %d, want %d", i, got, want)
				}
			}
		})
	}
}

// TestRefBlockSetGet: Set stores any value that fits and never disturbs a neighbour, for
// every width.
func TestRefBlockSetGet(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for order := uint32(0); order <= maxRefcountOrder; order++ {
		g := Geometry{ClusterBits: 9, RefcountOrder: order}
		n := g.refBlockEntries()
		b := RefBlock{Data: make([]byte, 512), Order: order}
		shadow := make([]refcount, n)
		for i := 0; i < 5000; i++ {
			idx := refBlockIndex(rng.Uint64N(n))
			v := refcount(rng.Uint64()) & g.maxRefcount()
			b.Set(idx, v)
			shadow[idx] = v
		}
		for i := uint64(0); i < n; i++ {
			if got := b.Get(refBlockIndex(i)); got != shadow[i] {
				t.Fatalf("order %d index %d: %d, want %d", order, i, got, shadow[i])
			}
		}
	}
}

func TestRefTableEntry(t *testing.T) {
	e := refTableEntry(0x0000000000450000 | 0x1ff)
	if e.Offset() != 0x450000 || e.reserved() != 0x1ff {
		t.Errorf("offset %v reserved %#x", e.Offset(), e.reserved())
	}
	// Bits 56..63 belong to the offset in a reftable entry (unlike L1/L2 entries).
	if e := refTableEntry(1 << 63); e.Offset() != 1<<63 {
		t.Errorf("high offset bit lost: %v", e.Offset())
	}
}

func TestSubclusterBitmap(t *testing.T) {
	b := makeSubclusterBitmap(0x0000ffff, 0xffff0000)
	if b.Allocated() != 0x0000ffff || b.zeroBits() != 0xffff0000 || uint64(b) != 0xffff00000000ffff {
		t.Errorf("bitmap %#x", uint64(b))
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{kindUnallocated: "unallocated", kindZero: "zero", kindData: "data", kindCompressed: "compressed", 9: "Kind(9)"} {
		if k.String() != want {
			t.Errorf("%d: %q", k, k.String())
		}
	}
}
