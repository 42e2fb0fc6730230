// The catalogue: which images are built, with which options and which writes.
package corpus

import (
	"fmt"
	"strconv"
)

// Spec describes how to build one catalogue image.
type Spec struct {
	// Name is the image's name; files are named after it.
	Name string
	// Features lists what the image is for, beyond those Build derives (cluster size,
	// refcount width, backing, kinds of writes).
	Features []string
	// Layers builds the backing chain bottom-up; the last layer is the image itself.
	Layers []LayerSpec
}

// LayerSpec is one file of a chain.
type LayerSpec struct {
	// Suffix completes the file name: "<spec name>.<suffix>".
	Suffix string
	// Format is "qcow2" or "raw".
	Format string
	// Size is the virtual size in bytes.
	Size int64
	// Options are qemu-img create -o options (cluster_size=4096, refcount_bits=1, ...).
	Options []string
	// DataFile puts the data in an external file "<name>.<suffix>.data";
	// DataFileRaw also sets data_file_raw=on.
	DataFile, DataFileRaw bool
	// Ops are applied in order after creation.
	Ops []Op
}

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
	tib = int64(1) << 40
)

// Specs returns the catalogue, in build order. The result is a fresh copy.
func Specs() []Spec {
	var s []Spec
	s = append(s, clusterMatrix()...)
	s = append(s,
		Spec{Name: "empty", Features: []string{FeatureEmpty},
			Layers: []LayerSpec{qcow2Layer(64*mib, nil)}},
		Spec{Name: "v2-cluster-64k", Features: []string{FeatureV2},
			Layers: []LayerSpec{qcow2Layer(64*mib, []string{"compat=0.10"}, standardOps(64*kib, 64*mib)...)}},
		Spec{Name: "v2-cluster-4k", Features: []string{FeatureV2},
			Layers: []LayerSpec{qcow2Layer(64*mib, []string{"compat=0.10", "cluster_size=4096"}, standardOps(4*kib, 64*mib)...)}},
	)
	for _, cs := range []int64{16 * kib, 64 * kib, 2 * mib} {
		s = append(s, Spec{
			Name:     "extended-l2-" + sizeName(cs),
			Features: []string{FeatureExtendedL2, FeatureSubclusters, FeatureZeroClusters},
			Layers: []LayerSpec{qcow2Layer(64*mib, []string{"extended_l2=on", clusterOpt(cs)},
				append(standardOps(cs, 64*mib), subclusterOps(cs)...)...)},
		})
	}
	s = append(s, Spec{
		Name:     "extended-l2-backing",
		Features: []string{FeatureExtendedL2, FeatureSubclusters},
		Layers: []LayerSpec{
			backingLayer(qcow2Layer(16*mib, nil, Op{Kind: OpStamp, Seed: 0x30, Off: 0, Len: 2 * mib})),
			qcow2Layer(16*mib, []string{"extended_l2=on"}, subclusterOps(64*kib)...),
		},
	})
	s = append(s, compressedSpecs()...)
	s = append(s, backingSpecs()...)
	s = append(s, dataFileSpecs()...)
	s = append(s, snapshotSpec())
	for _, mode := range []string{"metadata", "falloc", "full"} {
		s = append(s, Spec{
			Name:     "prealloc-" + mode,
			Features: []string{FeaturePrealloc + mode},
			Layers: []LayerSpec{qcow2Layer(16*mib, []string{"preallocation=" + mode},
				Op{Kind: OpStamp, Seed: 0x60, Off: 1000, Len: 5000},
				Op{Kind: OpZero, Off: mib, Len: 64 * kib},
				Op{Kind: OpFill, Seed: 0x61, Off: 16*mib - 700, Len: 700},
			)},
		})
	}
	s = append(s, Spec{
		Name:     "large-4t",
		Features: []string{FeatureLarge, FeatureMultiL2},
		Layers: []LayerSpec{qcow2Layer(4*tib, nil,
			Op{Kind: OpStamp, Seed: 0x70, Off: 0, Len: 4096},
			Op{Kind: OpStamp, Seed: 0x71, Off: tib + 12345, Len: 70000},
			Op{Kind: OpFill, Seed: 0x72, Off: 2*tib - 300, Len: 600},
			Op{Kind: OpStamp, Seed: 0x73, Off: 3*tib + 5*gib + 777, Len: 3 * mib},
			Op{Kind: OpStamp, Seed: 0x74, Off: 4*tib - 5000, Len: 5000},
		)},
	})
	s = append(s, lazyRefcountSpecs()...)
	s = append(s, oddSizeSpecs()...)
	s = append(s,
		Spec{Name: "zero-clusters", Features: []string{FeatureZeroClusters},
			Layers: []LayerSpec{qcow2Layer(32*mib, nil,
				Op{Kind: OpStamp, Seed: 0x90, Off: 0, Len: 512 * kib},
				Op{Kind: OpZero, Off: 64 * kib, Len: 128 * kib},       // allocated, whole clusters
				Op{Kind: OpZeroUnmap, Off: 256 * kib, Len: 64 * kib},  // allocated, unmapped
				Op{Kind: OpZero, Off: 400*kib + 100, Len: 1000},       // partial cluster
				Op{Kind: OpZero, Off: 4 * mib, Len: 256 * kib},        // never written
				Op{Kind: OpZeroUnmap, Off: 8 * mib, Len: mib},         // never written, unmap
				Op{Kind: OpStamp, Seed: 0x91, Off: 96 * kib, Len: 10}, // data inside a zero cluster
			)}},
		Spec{Name: "discard", Features: []string{FeatureDiscard},
			Layers: []LayerSpec{qcow2Layer(32*mib, nil,
				Op{Kind: OpStamp, Seed: 0xa0, Off: 0, Len: mib},
				Op{Kind: OpDiscard, Off: 128 * kib, Len: 256 * kib},
				Op{Kind: OpStamp, Seed: 0xa1, Off: 2 * mib, Len: 64 * kib},
				Op{Kind: OpDiscard, Off: 2 * mib, Len: 64 * kib},
				Op{Kind: OpFill, Seed: 0xa2, Off: 3 * mib, Len: 200 * kib},
				Op{Kind: OpDiscard, Off: 3*mib + 64*kib, Len: 64 * kib},
				Op{Kind: OpStamp, Seed: 0xa3, Off: 128*kib + 5, Len: 100}, // rewrite a discarded cluster
			)}},
		Spec{Name: "discard-cluster-4k-refcount-1", Features: []string{FeatureDiscard},
			Layers: []LayerSpec{qcow2Layer(8*mib, []string{"cluster_size=4096", "refcount_bits=1"},
				Op{Kind: OpStamp, Seed: 0xa8, Off: 0, Len: 256 * kib},
				Op{Kind: OpDiscard, Off: 8 * kib, Len: 32 * kib},
				Op{Kind: OpStamp, Seed: 0xa9, Off: 12 * kib, Len: 4 * kib}, // reuses a freed cluster
			)}},
	)
	return s
}

// clusterMatrix crosses every cluster size with a spread of refcount widths: each size gets
// two or three widths, every width appears at small and large sizes, and 1, 16 and 64 bits
// appear at both ends of the cluster range.
func clusterMatrix() []Spec {
	widths := map[int][]int{
		9: {1, 16, 64}, 10: {2, 64}, 11: {4, 32}, 12: {8, 16}, 13: {16, 1}, 14: {32, 2},
		15: {64, 4}, 16: {16, 1, 64}, 17: {1, 8}, 18: {2, 32}, 19: {4, 64}, 20: {8, 16},
		21: {16, 64, 1},
	}
	var out []Spec
	for bits := 9; bits <= 21; bits++ {
		cs := int64(1) << bits
		for _, w := range widths[bits] {
			out = append(out, Spec{
				Name: fmt.Sprintf("cluster-%s-refcount-%d", sizeName(cs), w),
				Layers: []LayerSpec{qcow2Layer(64*mib,
					[]string{clusterOpt(cs), "refcount_bits=" + strconv.Itoa(w)},
					standardOps(cs, 64*mib)...)},
			})
		}
	}
	return out
}

// standardOps is the write pattern of the cluster matrix: a partial first cluster, a write
// across a cluster boundary, a multi-cluster unaligned write, a full-cluster zero over data,
// writes across an L2 table's range (when the image is large enough), in the middle and up
// to the last byte.
func standardOps(cs, size int64) []Op {
	ops := []Op{
		{Kind: OpStamp, Seed: 0x01, Off: 0, Len: 3000},
		{Kind: OpFill, Seed: 0xa1, Off: cs - 100, Len: 200},
		{Kind: OpStamp, Seed: 0x02, Off: 3*cs + 17, Len: 2*cs + 5},
		{Kind: OpZero, Off: 4 * cs, Len: cs},
		{Kind: OpStamp, Seed: 0x03, Off: size/2 + 1234, Len: 3 * cs},
	}
	if l2 := l2Coverage(cs); l2 < size {
		ops = append(ops, Op{Kind: OpStamp, Seed: 0x04, Off: l2 - 700, Len: 1400})
	}
	return append(ops, Op{Kind: OpStamp, Seed: 0x05, Off: size - 5000, Len: 5000})
}

// subclusterOps writes single and partial subclusters of an extended-L2 image (32
// subclusters per cluster), and zeroes single subclusters.
func subclusterOps(cs int64) []Op {
	sc := cs / 32
	return []Op{
		{Kind: OpStamp, Seed: 0x21, Off: 8*cs + sc, Len: sc},               // one subcluster
		{Kind: OpStamp, Seed: 0x22, Off: 9*cs + 3*sc + 100, Len: sc},       // across two
		{Kind: OpStamp, Seed: 0x23, Off: 9*cs + 20*sc + 7, Len: 10},        // inside one
		{Kind: OpStamp, Seed: 0x24, Off: 10 * cs, Len: cs},                 // a whole cluster
		{Kind: OpZero, Off: 10*cs + 2*sc, Len: sc},                         // one zero subcluster
		{Kind: OpZeroUnmap, Off: 10*cs + 5*sc, Len: 2 * sc},                // unmapped pair
		{Kind: OpFill, Seed: 0x25, Off: 11*cs + 31*sc, Len: sc + sc/2},     // last subcluster on
		{Kind: OpStamp, Seed: 0x26, Off: 10*cs + 2*sc + sc/4, Len: sc / 2}, // into a zero one
	}
}

func compressedSpecs() []Spec {
	contentOps := func(cs, size int64) []Op {
		return []Op{
			{Kind: OpText, Seed: 0x50, Off: 0, Len: mib + 300},
			{Kind: OpFill, Seed: 0x51, Off: 2 * mib, Len: 5000},
			{Kind: OpStamp, Seed: 0x52, Off: 3 * mib, Len: 70000}, // incompressible: stays plain
			{Kind: OpText, Seed: 0x53, Off: size - 10000, Len: 10000},
		}
	}
	overwrite := func(cs int64) []Op {
		return []Op{
			{Kind: OpStamp, Seed: 0x54, Off: cs + 1000, Len: 3000}, // copy-on-write of a compressed cluster
			{Kind: OpZero, Off: 4 * cs, Len: cs},
			{Kind: OpDiscard, Off: 6 * cs, Len: cs},
			{Kind: OpText, Seed: 0x55, Off: 8*cs - 10, Len: 20},
		}
	}
	mk := func(typ string, cs int64, rewrite bool) Spec {
		ops := append(contentOps(cs, 32*mib), Op{Kind: OpCompress, Name: typ})
		name := fmt.Sprintf("compressed-%s-%s", typ, sizeName(cs))
		features := []string{FeatureCompressed + typ}
		if rewrite {
			ops = append(ops, overwrite(cs)...)
			name += "-overwritten"
			features = append(features, FeatureCompressedRW)
		}
		return Spec{Name: name, Features: features,
			Layers: []LayerSpec{qcow2Layer(32*mib, []string{clusterOpt(cs), "compression_type=" + typ}, ops...)}}
	}
	return []Spec{
		mk("zlib", 64*kib, false), mk("zstd", 64*kib, false),
		mk("zlib", 512, false), mk("zstd", 2*mib, false),
		mk("zlib", 64*kib, true), mk("zstd", 4*kib, true),
	}
}

func backingSpecs() []Spec {
	chain := Spec{
		Name:     "backing-chain-3",
		Features: []string{FeatureChain3},
		Layers: []LayerSpec{
			{Suffix: "base.raw", Format: "raw", Size: 32 * mib, Ops: []Op{
				{Kind: OpStamp, Seed: 0x40, Off: 0, Len: 4 * mib},
				{Kind: OpFill, Seed: 0x4a, Off: 8 * mib, Len: mib},
				{Kind: OpStamp, Seed: 0x4b, Off: 32*mib - 4096, Len: 4096},
			}},
			{Suffix: "mid.qcow2", Format: "qcow2", Size: 32 * mib, Ops: []Op{
				{Kind: OpStamp, Seed: 0x41, Off: 100 * kib, Len: 200 * kib},
				{Kind: OpZero, Off: 2 * mib, Len: 128 * kib},
				{Kind: OpFill, Seed: 0x4c, Off: 9*mib - 100, Len: 200},
			}},
			{Suffix: "qcow2", Format: "qcow2", Size: 32 * mib, Options: []string{"cluster_size=4096"}, Ops: []Op{
				{Kind: OpStamp, Seed: 0x42, Off: 150 * kib, Len: 10 * kib},
				{Kind: OpStamp, Seed: 0x43, Off: mib + 5, Len: 3},
				{Kind: OpZero, Off: 8*mib + 4*kib, Len: 64 * kib},
				{Kind: OpStamp, Seed: 0x44, Off: 2*mib + 64*kib - 10, Len: 20},
			}},
		},
	}
	larger := Spec{
		Name:     "overlay-larger",
		Features: []string{FeatureOverlayLarge},
		Layers: []LayerSpec{
			backingLayer(qcow2Layer(16*mib, nil, Op{Kind: OpStamp, Seed: 0x45, Off: 16*mib - 100*kib, Len: 100 * kib})),
			qcow2Layer(48*mib, nil,
				Op{Kind: OpStamp, Seed: 0x46, Off: 16*mib - 1000, Len: 2000}, // straddles the backing's end
				Op{Kind: OpStamp, Seed: 0x47, Off: 40 * mib, Len: 4096},
			),
		},
	}
	return []Spec{chain, larger}
}

func dataFileSpecs() []Spec {
	ops := []Op{
		{Kind: OpStamp, Seed: 0xb0, Off: 1000, Len: 200 * kib},
		{Kind: OpZero, Off: 64 * kib, Len: 64 * kib},
		{Kind: OpFill, Seed: 0xb1, Off: 5*mib - 3, Len: 6},
		{Kind: OpDiscard, Off: 128 * kib, Len: 64 * kib},
		{Kind: OpStamp, Seed: 0xb2, Off: 32*mib - 512, Len: 512},
	}
	plain := qcow2Layer(32*mib, nil, ops...)
	plain.DataFile = true
	raw := qcow2Layer(32*mib, nil, ops...)
	raw.DataFile, raw.DataFileRaw = true, true
	return []Spec{
		{Name: "data-file", Features: []string{FeatureDataFile}, Layers: []LayerSpec{plain}},
		{Name: "data-file-raw", Features: []string{FeatureDataFile, FeatureDataFileRaw}, Layers: []LayerSpec{raw}},
	}
}

func snapshotSpec() Spec {
	return Spec{
		Name:     "internal-snapshot",
		Features: []string{FeatureSnapshot},
		Layers: []LayerSpec{qcow2Layer(32*mib, nil,
			Op{Kind: OpStamp, Seed: 0xc0, Off: 0, Len: 300 * kib},
			Op{Kind: OpFill, Seed: 0xc1, Off: mib, Len: 64 * kib},
			Op{Kind: OpSnapshot, Name: "snap1"},
			Op{Kind: OpStamp, Seed: 0xc2, Off: 100 * kib, Len: 50 * kib}, // copy-on-write of shared clusters
			Op{Kind: OpZero, Off: mib, Len: 64 * kib},
			Op{Kind: OpSnapshot, Name: "snap2"},
			Op{Kind: OpStamp, Seed: 0xc3, Off: 5 * mib, Len: 10 * kib},
			Op{Kind: OpStamp, Seed: 0xc4, Off: 120 * kib, Len: 1000},
		)},
	}
}

func lazyRefcountSpecs() []Spec {
	return []Spec{
		{Name: "lazy-refcounts-clean", Features: []string{FeatureLazyRefcount},
			Layers: []LayerSpec{qcow2Layer(32*mib, []string{"lazy_refcounts=on"},
				Op{Kind: OpStamp, Seed: 0xd0, Off: 0, Len: mib},
				Op{Kind: OpStamp, Seed: 0xd1, Off: 4*mib + 3, Len: 64 * kib},
			)}},
		{Name: "dirty-lazy-refcounts", Features: []string{FeatureLazyRefcount, FeatureDirty},
			Layers: []LayerSpec{qcow2Layer(32*mib, []string{"lazy_refcounts=on"},
				Op{Kind: OpStamp, Seed: 0xd2, Off: 0, Len: mib},
				Op{Kind: OpStamp, Seed: 0xd3, Off: 4*mib + 3, Len: 64 * kib},
				Op{Kind: OpFill, Seed: 0xd4, Off: 8 * mib, Len: 1000},
				Op{Kind: OpCrash},
			)}},
	}
}

func oddSizeSpecs() []Spec {
	odd1 := 33*mib + 2560 // 64 KiB clusters: the last cluster is 2.5 KiB long
	odd2 := 5*mib + 512   // 4 KiB clusters
	return []Spec{
		{Name: "odd-size-64k", Features: []string{FeatureOddSize},
			Layers: []LayerSpec{qcow2Layer(odd1, nil,
				Op{Kind: OpStamp, Seed: 0xe0, Off: odd1 - 3000, Len: 3000},
				Op{Kind: OpStamp, Seed: 0xe1, Off: 32*mib + 100, Len: 2000},
			)}},
		{Name: "odd-size-4k", Features: []string{FeatureOddSize},
			Layers: []LayerSpec{qcow2Layer(odd2, []string{"cluster_size=4096"},
				Op{Kind: OpStamp, Seed: 0xe2, Off: odd2 - 512, Len: 512},
				Op{Kind: OpZero, Off: 5*mib - 8192, Len: 4096},
				Op{Kind: OpStamp, Seed: 0xe3, Off: 5*mib - 10, Len: 20},
			)}},
	}
}

// qcow2Layer is the usual top layer: "<name>.qcow2".
func qcow2Layer(size int64, options []string, ops ...Op) LayerSpec {
	return LayerSpec{Suffix: "qcow2", Format: "qcow2", Size: size, Options: options, Ops: ops}
}

// backingLayer renames a qcow2 layer used as a backing file: "<name>.base.qcow2".
func backingLayer(l LayerSpec) LayerSpec {
	l.Suffix = "base.qcow2"
	return l
}

// l2Coverage is the guest range one L2 table maps with standard (8-byte) entries.
func l2Coverage(cs int64) int64 { return cs * (cs / 8) }

func clusterOpt(cs int64) string { return "cluster_size=" + strconv.FormatInt(cs, 10) }

// sizeName renders a power-of-two size as 512, 4k, 2m.
func sizeName(n int64) string {
	switch {
	case n >= mib && n%mib == 0:
		return strconv.FormatInt(n/mib, 10) + "m"
	case n >= kib && n%kib == 0:
		return strconv.FormatInt(n/kib, 10) + "k"
	}
	return strconv.FormatInt(n, 10)
}
