package qcow2

import (
	"math/rand/v2"
	"testing"
)

// allGeometries is every geometry the format allows: cluster_bits 9..21 (extended L2 from
// 14), refcount_order 0..6.
func allGeometries() []Geometry {
	var gs []Geometry
	for cb := uint32(minClusterBits); cb <= maxClusterBits; cb++ {
		for ro := uint32(0); ro <= maxRefcountOrder; ro++ {
			gs = append(gs, Geometry{ClusterBits: cb, RefcountOrder: ro})
			if cb >= minExtendedL2ClusterBits {
				gs = append(gs, Geometry{ClusterBits: cb, RefcountOrder: ro, ExtendedL2: true})
			}
		}
	}
	return gs
}

// TestGeometryMatchesSpecFormulas recomputes each derived size with the spec's own formulas
// (divisions and remainders, not the shifts types.go uses).
func TestGeometryMatchesSpecFormulas(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, g := range allGeometries() {
		cs := uint64(1) << g.ClusterBits
		entrySize := uint64(8) // "l2_entries = (cluster_size / sizeof(uint64_t))"
		if g.ExtendedL2 {
			entrySize = 16 // "l2_entries = (cluster_size / (2 * sizeof(uint64_t)))"
		}
		l2Entries := cs / entrySize
		refBits := uint64(1) << g.RefcountOrder
		refEntries := cs * 8 / refBits // "refcount_block_entries = (cluster_size * 8 / refcount_bits)"
		if g.ClusterSize() != cs || g.l2Entries() != l2Entries || uint64(1)<<g.l2Bits() != l2Entries ||
			g.l2EntrySize() != entrySize || g.RefcountBits() != refBits || g.refBlockEntries() != refEntries ||
			uint64(1)<<g.refBlockBits() != refEntries || g.guestBytesPerL2() != l2Entries*cs {
			t.Fatalf("%+v: derived sizes disagree with the spec", g)
		}
		wantSub := cs
		if g.ExtendedL2 {
			wantSub = cs / 32
		}
		if g.subclusterSize() != wantSub {
			t.Fatalf("%+v: subcluster size %d", g, g.subclusterSize())
		}
		var maxRef uint64 = 1<<refBits - 1
		if refBits == 64 {
			maxRef = ^uint64(0)
		}
		if uint64(g.maxRefcount()) != maxRef {
			t.Fatalf("%+v: max refcount %d", g, g.maxRefcount())
		}
		for i := 0; i < 200; i++ {
			off := rng.Uint64() >> rng.IntN(64)
			// "l2_index = (offset / cluster_size) % l2_entries; l1_index = (offset / cluster_size) / l2_entries"
			o := GuestOffset(off)
			if uint64(o.l2Index(g)) != (off/cs)%l2Entries || uint64(o.l1Index(g)) != (off/cs)/l2Entries ||
				o.inCluster(g) != off%cs || uint64(o.cluster(g)) != off/cs {
				t.Fatalf("%+v: guest offset %#x maps wrongly", g, off)
			}
			c := o.cluster(g)
			if c.l1Index(g).firstCluster(g)+guestCluster(c.l2Index(g)) != c {
				t.Fatalf("%+v: L1/L2 index of cluster %d do not recompose", g, c)
			}
			if uint64(c.remainingInL2(g)) != l2Entries-(off/cs)%l2Entries {
				t.Fatalf("%+v: remaining in L2", g)
			}
			// "refcount_block_index = (offset / cluster_size) % refcount_block_entries;
			//  refcount_table_index = (offset / cluster_size) / refcount_block_entries"
			h := HostOffset(off)
			hc := h.cluster(g)
			if uint64(hc.refBlockIndex(g)) != (off/cs)%refEntries || uint64(hc.refTableIndex(g)) != (off/cs)/refEntries {
				t.Fatalf("%+v: host offset %#x refcount indices wrong", g, off)
			}
			if hc.refTableIndex(g).firstCluster(g)+hostCluster(hc.refBlockIndex(g)) != hc {
				t.Fatalf("%+v: reftable/refblock indices do not recompose", g)
			}
			if _, ok := h.checkedCluster(g); ok != (off%cs == 0) {
				t.Fatalf("%+v: CheckedCluster(%#x) = %v", g, off, ok)
			}
			if hc.Offset(g) != HostOffset(off-off%cs) {
				t.Fatalf("%+v: cluster offset", g)
			}
		}
	}
}

func TestL1EntriesForAndClustersFor(t *testing.T) {
	for _, g := range allGeometries() {
		per := g.guestBytesPerL2()
		cs := g.ClusterSize()
		for _, size := range []uint64{0, 1, cs - 1, cs, cs + 1, per - 1, per, per + 1, 7 * per, 1 << 40, 1<<63 - 1, ^uint64(0)} {
			want := size / per
			if size%per != 0 {
				want++
			}
			if got := g.l1EntriesFor(size); got != want {
				t.Fatalf("%+v: L1EntriesFor(%d) = %d, want %d", g, size, got, want)
			}
			wc := size / cs
			if size%cs != 0 {
				wc++
			}
			if got := g.clustersFor(size); uint64(got) != wc {
				t.Fatalf("%+v: ClustersFor(%d) = %d, want %d", g, size, got, wc)
			}
			if size < 1<<40 && g.Bytes(ClusterCount(wc)) != wc*cs {
				t.Fatalf("%+v: Bytes", g)
			}
		}
	}
}

func TestNumberStrings(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{GuestOffset(0x10).String(), "guest:0x10"},
		{HostOffset(0x200).String(), "host:0x200"},
		{guestCluster(3).String(), "gcluster:3"},
		{hostCluster(4).String(), "hcluster:4"},
		{HostOffset(0x200).Add(0x10).String(), "host:0x210"},
		{hostCluster(4).Add(2).String(), "hcluster:6"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
