// The header boundary matrix (docs/test-plan.md): every numeric header and extension field at its limits,
// our parse against qemu-img info, and the documented differences.
package qcow2

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// The header boundary matrix (docs/test-plan.md): every numeric header and extension
// field of a real qemu-img image, set to {0, 1, limit-1, limit, limit+1, 2^31-1, 2^32-1,
// 2^64-1, misaligned}. For each case our parse (ReadHeader, then ReadSnapshots) must return
// either success or a clean ErrFormat/ErrUnsupported error - a *FormatError naming the field
// (or a field it constrains) - without panicking, allocating more than 256 MiB or taking more
// than a second. QEMU is the oracle: `qemu-img info` on the same bytes must agree on accept
// versus refuse, except in the cases listed in limitDifferences, each with the reason.

// limitImage is the base image: 64 KiB clusters, 1 GiB, a raw backing file with its format
// extension, a feature name table, one internal snapshot and one persistent bitmap (so the
// bitmaps extension and its autoclear bit are present).
type limitImage struct {
	store    *memstore.Store
	header   *Header
	fileSize int64
	exts     map[uint32]int64 // extension type -> byte offset of its type word
	snap0    int64            // byte offset of the first snapshot table entry
	cluster0 []byte           // the first cluster
	snapL1   HostOffset       // the first snapshot's L1 table
}

func makeLimitImage(t *testing.T) *limitImage {
	t.Helper()
	dir := t.TempDir()
	backing := filepath.Join(dir, "b.raw")
	img := filepath.Join(dir, "base.qcow2")
	qemuImgOutput(t, "create", "-q", "-f", "raw", backing, "1G")
	qemuImgOutput(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "-b", backing, "-F", "raw", img, "1G")
	qemuIO(t, img, "write -P 1 0 128k")
	qemuImgOutput(t, "snapshot", "-c", "s1", img)
	qemuImgOutput(t, "bitmap", "--add", img, "bm0")
	s := storeOf(t, img)
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	li := &limitImage{store: s, header: h, exts: map[uint32]int64{}, snap0: int64(h.SnapshotsOffset)}
	li.fileSize, _ = s.Size()
	c0 := readFull(t, s, 0, h.ClusterSize())
	li.cluster0 = c0
	li.snapL1 = HostOffset(binary.BigEndian.Uint64(readFull(t, s, h.SnapshotsOffset, 8)))
	for off := uint64(h.HeaderLength); off+8 <= h.BackingFileOffset; {
		typ, n := binary.BigEndian.Uint32(c0[off:]), binary.BigEndian.Uint32(c0[off+4:])
		if typ == extEnd {
			break
		}
		li.exts[typ] = int64(off)
		off += 8 + pad8(uint64(n))
	}
	for _, typ := range []uint32{extBackingFormat, extFeatureNames, extBitmaps} {
		if _, ok := li.exts[typ]; !ok {
			t.Fatalf("base image lacks extension %#x; qemu-img changed its layout", typ)
		}
	}
	if h.BackingFile == "" || h.SnapshotCount != 1 || h.Autoclear&AutoclearBitmaps == 0 {
		t.Fatalf("base image is not what the matrix needs: %+v", h)
	}
	return li
}

// limitField is one field of the matrix: where it is, how wide, the values to try, and the
// FormatError fields a refusal may name (the field itself, or one it constrains).
type limitField struct {
	name   string
	off    int64
	width  int
	values []uint64
	names  []string
}

// limitCase is one (field, value) pair.
type limitCase struct {
	field limitField
	val   uint64
}

func (c limitCase) String() string { return fmt.Sprintf("%s=%#x", c.field.name, c.val) }

// common are the values every field gets; the field adds its own limits.
func common(width int) []uint64 {
	v := []uint64{0, 1, math.MaxInt32, math.MaxUint32}
	if width == 8 {
		v = append(v, math.MaxUint64, math.MaxInt64)
	}
	if width == 1 {
		v = []uint64{0, 1, 0x7f, 0xff}
	}
	return v
}

func (li *limitImage) fields() []limitField {
	h := li.header
	cs := h.ClusterSize()
	fs := uint64(li.fileSize)
	endAligned := (fs + cs - 1) &^ (cs - 1) // the first cluster boundary at or past the end
	need := h.Geometry().l1EntriesFor(h.Size)
	perL1 := h.Geometry().guestBytesPerL2()
	f := func(name string, off int64, width int, names []string, extra ...uint64) limitField {
		vals := append(common(width), extra...)
		slices.Sort(vals)
		vals = slices.Compact(vals)
		if names == nil {
			names = []string{name}
		}
		return limitField{name: name, off: off, width: width, values: vals, names: names}
	}
	bm := li.exts[extBitmaps]
	bmNames := []string{"nb_bitmaps", "bitmap_directory_size", "bitmap_directory_offset", "bitmaps extension reserved field", "bitmaps extension length"}
	return []limitField{
		f("version", offVersion, 4, nil, 2, 3, 4),
		f("backing_file_offset", offBackingFileOffset, 8, []string{"backing_file_offset", "backing_file_size", "header extension length", "header extension type"},
			cs-1, cs, cs+1, h.BackingFileOffset-1, h.BackingFileOffset+1, uint64(h.HeaderLength)-8, cs-5),
		f("backing_file_size", offBackingFileSize, 4, nil, maxBackingFileSize-1, maxBackingFileSize, maxBackingFileSize+1, cs-h.BackingFileOffset, cs-h.BackingFileOffset+1),
		f("cluster_bits", offClusterBits, 4, []string{"cluster_bits", "header_length", "backing_file_offset", "backing_file_size", "l1_size", "l1_table_offset",
			"refcount_table_offset", "refcount_table_clusters", "snapshots_offset", "bitmap_directory_offset", "header extension length", "size"},
			minClusterBits-1, minClusterBits, minClusterBits+1, 15, 17, maxClusterBits-1, maxClusterBits, maxClusterBits+1, 32, 64),
		f("size", offSize, 8, []string{"size", "l1_size"}, uint64(h.L1Size)*perL1-1, uint64(h.L1Size)*perL1, uint64(h.L1Size)*perL1+1, 1<<61, 1<<62, 1<<63),
		f("crypt_method", offCryptMethod, 4, nil, 2, 3),
		f("l1_size", offL1Size, 4, []string{"l1_size", "l1_table_offset"}, need-1, need, need+1, MaxL1Bytes/8-1, MaxL1Bytes/8, MaxL1Bytes/8+1),
		f("l1_table_offset", offL1TableOffset, 8, nil, uint64(h.L1TableOffset)+512, uint64(h.L1TableOffset)+cs, endAligned-cs, endAligned, 1<<56, maxHostOffset-cs),
		f("refcount_table_offset", offRefcountTableOffset, 8, nil, uint64(h.RefTableOffset)+512, endAligned-cs, endAligned, 1<<56, 1<<63),
		f("refcount_table_clusters", offRefcountTableClusters, 4, []string{"refcount_table_clusters", "refcount_table_offset"},
			maxRefTableBytes/cs-1, maxRefTableBytes/cs, maxRefTableBytes/cs+1, 2, 8),
		f("nb_snapshots", offNbSnapshots, 4, []string{"nb_snapshots", "snapshots_offset", "snapshot[1].header", "snapshot[1].padding", "snapshot[1].extra_data_size",
			"snapshot[1].l1_table_offset", "snapshot[1].l1_size", "snapshot[1].id", "snapshot[1].name", "snapshot[1].extra_data"},
			maxSnapshots-1, maxSnapshots, maxSnapshots+1, 2),
		f("snapshots_offset", offSnapshotsOffset, 8, []string{"snapshots_offset", "snapshot[0].header", "snapshot[0].extra_data_size", "snapshot[0].l1_table_offset",
			"snapshot[0].l1_size", "snapshot[0].id", "snapshot[0].name", "snapshot[0].extra_data"},
			uint64(h.SnapshotsOffset)+512, endAligned-cs, endAligned, 1<<56),
		f("incompatible_features", offIncompatibleFeatures, 8, []string{"incompatible_features", "compression_type", "cluster_bits", "refcount_table_offset",
			"l1_table_offset", "backing_file_offset", "l1_size"}, incompatKnown, incompatDirty|incompatCorrupt, incompatDataFile, IncompatExtendedL2, incompatCompression),
		f("compatible_features", offCompatibleFeatures, 8, nil, compatLazyRefcounts, 2),
		f("autoclear_features", offAutoclearFeatures, 8, []string{"autoclear_features", "backing_file_offset"}, autoclearDataFileRaw, AutoclearBitmaps|autoclearDataFileRaw, 4),
		f("refcount_order", offRefcountOrder, 4, nil, 3, 4, 5, maxRefcountOrder, maxRefcountOrder+1, 64),
		f("header_length", offHeaderLength, 4, []string{"header_length", "header extension length", "header extension type", "backing_file_offset"},
			headerV2Length, headerV3MinLength-1, headerV3MinLength, headerV3MinLength+1, headerV3Length-1, headerV3Length, headerV3Length+8, cs-1, cs, cs+1),
		f("compression_type", offCompressionType, 1, nil, 2, 3),
		f("ext backing format length", li.exts[extBackingFormat]+4, 4, []string{"header extension length", "backing format extension", "header extension type"},
			maxStringLength-1, maxStringLength, maxStringLength+1, 15, 16, 17, h.BackingFileOffset-uint64(li.exts[extBackingFormat])-8, h.BackingFileOffset-uint64(li.exts[extBackingFormat])-7),
		f("ext feature table length", li.exts[extFeatureNames]+4, 4, []string{"header extension length", "header extension type", "bitmaps extension length"},
			featureNameEntrySize-1, featureNameEntrySize, featureNameEntrySize+1),
		f("ext bitmaps length", bm+4, 4, []string{"header extension length", "bitmaps extension length"}, bitmapsExtSize-1, bitmapsExtSize+1, bitmapsExtSize+8),
		f("nb_bitmaps", bm+8, 4, bmNames, MaxBitmaps-1, MaxBitmaps, MaxBitmaps+1, 2),
		f("bitmaps reserved", bm+12, 4, bmNames),
		f("bitmap_directory_size", bm+16, 8, bmNames, MaxBitmapDirectoryBytes-1, MaxBitmapDirectoryBytes, MaxBitmapDirectoryBytes+1, bitmapDirEntryFixedSize-1, bitmapDirEntryFixedSize),
		f("bitmap_directory_offset", bm+24, 8, bmNames, endAligned-cs, endAligned, 512, 1<<56),
		f("snapshot l1_table_offset", li.snap0, 8, []string{"snapshot[0].l1_table_offset"}, endAligned, 512, 1<<56),
		f("snapshot l1_size", li.snap0+8, 4, []string{"snapshot[0].l1_size", "snapshot[0].l1_table_offset"}, MaxL1Bytes/8-1, MaxL1Bytes/8, MaxL1Bytes/8+1),
		f("snapshot id_str_size", li.snap0+12, 2, []string{"snapshot[0].id", "snapshot[0].name", "snapshot[0].l1_table_offset"}, 0xffff, 0x7fff),
		f("snapshot name_size", li.snap0+14, 2, []string{"snapshot[0].name"}, 0xffff, 0x7fff),
		f("snapshot extra_data_size", li.snap0+36, 4, []string{"snapshot[0].extra_data_size", "snapshot[0].extra_data", "snapshot[0].id", "snapshot[0].name", "snapshot[0].l1_table_offset"},
			minSnapshotExtraDataV3-1, minSnapshotExtraDataV3, maxSnapshotExtraData-1, maxSnapshotExtraData, maxSnapshotExtraData+1),
	}
}

// bitCases adds incompatible bits 5..63 one at a time, and each known bit alone.
func bitCases() []limitCase {
	var cs []limitCase
	f := limitField{name: "incompatible bit", off: offIncompatibleFeatures, width: 8,
		names: []string{"incompatible_features", "compression_type", "cluster_bits", "backing_file_offset", "l1_size"}}
	for bit := 0; bit < 64; bit++ {
		cs = append(cs, limitCase{field: f, val: 1 << bit})
	}
	return cs
}

func TestHeaderLimitsMatrix(t *testing.T) {
	li := makeLimitImage(t)
	dir := t.TempDir()
	var cases []limitCase
	for _, f := range li.fields() {
		for _, v := range f.values {
			cases = append(cases, limitCase{field: f, val: v})
		}
	}
	cases = append(cases, bitCases()...)
	// Our parse runs case by case (so that its allocations can be measured alone), and
	// writes each mutated image for the oracle, which then runs in parallel.
	errs := make([]error, len(cases))
	for i, c := range cases {
		s := li.store.Clone()
		b := make([]byte, 8)
		binary.BigEndian.PutUint64(b, c.val)
		if _, err := s.WriteAt(b[8-c.field.width:], c.field.off); err != nil {
			t.Fatal(err)
		}
		errs[i] = runMeasured(t, c.String(), func() error { return parseAll(s) })
		if err := s.WriteFile(filepath.Join(dir, fmt.Sprintf("case%d.qcow2", i))); err != nil {
			t.Fatal(err)
		}
	}
	qoks := make([]bool, len(cases))
	qouts := make([]string, len(cases))
	var wg sync.WaitGroup
	next := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range next {
				qoks[i], qouts[i] = qemuInfoOK(t, filepath.Join(dir, fmt.Sprintf("case%d.qcow2", i)))
			}
		})
	}
	for i := range cases {
		next <- i
	}
	close(next)
	wg.Wait()

	table := os.Getenv("QNBD_LIMITS_TABLE") != ""
	var agree, stricter, laxer int
	for i, c := range cases {
		err, qok, qout := errs[i], qoks[i], qouts[i]
		if table {
			fmt.Printf("%-45s ours=%-5v qemu=%-5v %v | %s\n", c, err == nil, qok, err, lastLine(qout))
		}
		if err != nil {
			if cerr := classify(err, c.field.names); cerr != nil {
				t.Errorf("%s: %v", c, cerr)
			}
		}
		d, known := limitDifference(li, c)
		switch {
		case (err == nil) == qok:
			agree++
			if known != 0 {
				t.Errorf("%s: listed as a difference from QEMU (%s), but we agree (ours: %v)", c, d, err)
			}
		case err != nil && known == refuseMore:
			stricter++
		case err == nil && known == acceptMore:
			laxer++
		case err != nil:
			t.Errorf("%s: we refuse (%v) an image QEMU opens", c, err)
		default:
			t.Errorf("%s: we accept an image QEMU refuses: %s", c, lastLine(qout))
		}
	}
	t.Logf("%d cases: %d agree with qemu-img, %d refused where QEMU opens (documented), %d accepted where QEMU refuses (documented)",
		len(cases), agree, stricter, laxer)
}

const (
	refuseMore = 1  // we refuse, QEMU opens
	acceptMore = -1 // we accept, QEMU refuses
)

// limitDifference says whether, and why, our answer for c differs from QEMU's by design.
// Where we refuse what QEMU opens, it is because QEMU reads zeros past the end of the file,
// checks some tables only when it uses them, or serves what qnbd does not (AES). We open
// nothing QEMU refuses: the bitmaps extension, its directory and tables get QEMU's verdicts
// (docs/bitmaps.md, "Damaged bitmaps").
func limitDifference(li *limitImage, c limitCase) (string, int) {
	h := li.header
	cs := h.ClusterSize()
	fs := uint64(li.fileSize)
	v := c.val
	aligned := v%cs == 0
	// outside: at 0, or past the end of the file but below QEMU's INT64_MAX bound.
	outside := func(off, n uint64) bool {
		return off == 0 || (off+n > fs && off+n >= off && off+n <= math.MaxInt64)
	}
	const outsideWhy = "a table outside the file (or at offset 0): QEMU reads zeros past EOF and opens it"
	switch c.field.name {
	case "backing_file_offset":
		if v != 0 && v < uint64(h.HeaderLength) {
			return "backing name inside the fixed header: QEMU reads it from there", refuseMore
		}
	case "header_length":
		// QEMU opens it if the extension area it then reads is empty or ends at once.
		if v >= headerV3MinLength && v < cs && v%8 != 0 && (v >= h.BackingFileOffset || binary.BigEndian.Uint32(li.cluster0[v:]) == 0) {
			return "header_length not a multiple of 8: the spec forbids it, QEMU does not check", refuseMore
		}
		if v == cs {
			return "a header as long as the cluster leaves the backing name inside it", refuseMore
		}
	case "crypt_method":
		if v == uint64(cryptAES) {
			return "AES encryption: qemu-img still opens it, qnbd serves no encrypted image", refuseMore
		}
	case "l1_size":
		if v*8 <= MaxL1Bytes && outside(uint64(h.L1TableOffset), v*8) {
			return outsideWhy, refuseMore
		}
	case "l1_table_offset":
		if aligned && outside(v, uint64(h.L1Size)*8) {
			return outsideWhy, refuseMore
		}
	case "refcount_table_offset":
		if aligned && outside(v, uint64(h.RefTableClusters)*cs) {
			return outsideWhy, refuseMore
		}
	case "refcount_table_clusters":
		if v*cs <= maxRefTableBytes && outside(uint64(h.RefTableOffset), v*cs) {
			return outsideWhy, refuseMore
		}
	case "autoclear_features":
		if v&autoclearDataFileRaw != 0 {
			return "raw external data bit without an external data file: the spec forbids it, QEMU ignores it when reading", refuseMore
		}
	}
	return "", 0
}
