package qcow2

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// The §6.1 A boundary matrix (reference/test-plan.md): every numeric header and extension
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
	s, err := memstore.FromFile(img)
	if err != nil {
		t.Fatal(err)
	}
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
		if typ == ExtEnd {
			break
		}
		li.exts[typ] = int64(off)
		off += 8 + pad8(uint64(n))
	}
	for _, typ := range []uint32{ExtBackingFormat, ExtFeatureNames, ExtBitmaps} {
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
	need := h.Geometry().L1EntriesFor(h.Size)
	perL1 := h.Geometry().GuestBytesPerL2()
	f := func(name string, off int64, width int, names []string, extra ...uint64) limitField {
		vals := append(common(width), extra...)
		slices.Sort(vals)
		vals = slices.Compact(vals)
		if names == nil {
			names = []string{name}
		}
		return limitField{name: name, off: off, width: width, values: vals, names: names}
	}
	bm := li.exts[ExtBitmaps]
	bmNames := []string{"nb_bitmaps", "bitmap_directory_size", "bitmap_directory_offset", "bitmaps extension reserved field", "bitmaps extension length"}
	return []limitField{
		f("version", offVersion, 4, nil, 2, 3, 4),
		f("backing_file_offset", offBackingFileOffset, 8, []string{"backing_file_offset", "backing_file_size", "header extension length", "header extension type"},
			cs-1, cs, cs+1, h.BackingFileOffset-1, h.BackingFileOffset+1, uint64(h.HeaderLength)-8, cs-5),
		f("backing_file_size", offBackingFileSize, 4, nil, MaxBackingFileSize-1, MaxBackingFileSize, MaxBackingFileSize+1, cs-h.BackingFileOffset, cs-h.BackingFileOffset+1),
		f("cluster_bits", offClusterBits, 4, []string{"cluster_bits", "header_length", "backing_file_offset", "backing_file_size", "l1_size", "l1_table_offset",
			"refcount_table_offset", "refcount_table_clusters", "snapshots_offset", "bitmap_directory_offset", "header extension length", "size"},
			MinClusterBits-1, MinClusterBits, MinClusterBits+1, 15, 17, MaxClusterBits-1, MaxClusterBits, MaxClusterBits+1, 32, 64),
		f("size", offSize, 8, []string{"size", "l1_size"}, uint64(h.L1Size)*perL1-1, uint64(h.L1Size)*perL1, uint64(h.L1Size)*perL1+1, 1<<61, 1<<62, 1<<63),
		f("crypt_method", offCryptMethod, 4, nil, 2, 3),
		f("l1_size", offL1Size, 4, []string{"l1_size", "l1_table_offset"}, need-1, need, need+1, MaxL1Bytes/8-1, MaxL1Bytes/8, MaxL1Bytes/8+1),
		f("l1_table_offset", offL1TableOffset, 8, nil, uint64(h.L1TableOffset)+512, uint64(h.L1TableOffset)+cs, endAligned-cs, endAligned, 1<<56, MaxHostOffset-cs),
		f("refcount_table_offset", offRefcountTableOffset, 8, nil, uint64(h.RefTableOffset)+512, endAligned-cs, endAligned, 1<<56, 1<<63),
		f("refcount_table_clusters", offRefcountTableClusters, 4, []string{"refcount_table_clusters", "refcount_table_offset"},
			MaxRefTableBytes/cs-1, MaxRefTableBytes/cs, MaxRefTableBytes/cs+1, 2, 8),
		f("nb_snapshots", offNbSnapshots, 4, []string{"nb_snapshots", "snapshots_offset", "snapshot[1].header", "snapshot[1].padding", "snapshot[1].extra_data_size",
			"snapshot[1].l1_table_offset", "snapshot[1].l1_size", "snapshot[1].id", "snapshot[1].name", "snapshot[1].extra_data"},
			MaxSnapshots-1, MaxSnapshots, MaxSnapshots+1, 2),
		f("snapshots_offset", offSnapshotsOffset, 8, []string{"snapshots_offset", "snapshot[0].header", "snapshot[0].extra_data_size", "snapshot[0].l1_table_offset",
			"snapshot[0].l1_size", "snapshot[0].id", "snapshot[0].name", "snapshot[0].extra_data"},
			uint64(h.SnapshotsOffset)+512, endAligned-cs, endAligned, 1<<56),
		f("incompatible_features", offIncompatibleFeatures, 8, []string{"incompatible_features", "compression_type", "cluster_bits", "refcount_table_offset",
			"l1_table_offset", "backing_file_offset", "l1_size"}, IncompatKnown, IncompatDirty|IncompatCorrupt, IncompatDataFile, IncompatExtendedL2, IncompatCompression),
		f("compatible_features", offCompatibleFeatures, 8, nil, CompatLazyRefcounts, 2),
		f("autoclear_features", offAutoclearFeatures, 8, []string{"autoclear_features", "backing_file_offset"}, AutoclearDataFileRaw, AutoclearBitmaps|AutoclearDataFileRaw, 4),
		f("refcount_order", offRefcountOrder, 4, nil, 3, 4, 5, MaxRefcountOrder, MaxRefcountOrder+1, 64),
		f("header_length", offHeaderLength, 4, []string{"header_length", "header extension length", "header extension type", "backing_file_offset"},
			HeaderV2Length, HeaderV3MinLength-1, HeaderV3MinLength, HeaderV3MinLength+1, HeaderV3Length-1, HeaderV3Length, HeaderV3Length+8, cs-1, cs, cs+1),
		f("compression_type", offCompressionType, 1, nil, 2, 3),
		f("ext backing format length", li.exts[ExtBackingFormat]+4, 4, []string{"header extension length", "backing format extension", "header extension type"},
			MaxStringLength-1, MaxStringLength, MaxStringLength+1, 15, 16, 17, h.BackingFileOffset-uint64(li.exts[ExtBackingFormat])-8, h.BackingFileOffset-uint64(li.exts[ExtBackingFormat])-7),
		f("ext feature table length", li.exts[ExtFeatureNames]+4, 4, []string{"header extension length", "header extension type", "bitmaps extension length"},
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
			MinSnapshotExtraDataV3-1, MinSnapshotExtraDataV3, MaxSnapshotExtraData-1, MaxSnapshotExtraData, MaxSnapshotExtraData+1),
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

// parseAll is what an open does with the header before touching data: the header with its
// extensions, then the snapshot table (LoadSnapshots, as Open reads it).
func parseAll(s Storage) error {
	h, err := ReadHeader(s)
	if err != nil {
		return err
	}
	_, err = LoadSnapshots(s, h)
	return err
}

// runMeasured runs fn, failing the test on a panic, more than 256 MiB allocated, or more than
// a second.
func runMeasured(t *testing.T, what string, fn func() error) (err error) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%s: panic: %v", what, r)
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		err = fn()
	}()
	el := time.Since(start)
	runtime.ReadMemStats(&after)
	if a := after.TotalAlloc - before.TotalAlloc; a > 256<<20 {
		t.Errorf("%s: allocated %d MiB", what, a>>20)
	}
	if el > time.Second {
		t.Errorf("%s: took %v", what, el)
	}
	return err
}

// qemuAccepts reports whether `qemu-img info` opens the image in s (it opens the qcow2 layer
// fully, reading the snapshot table and the bitmap directory, but not the backing file).
func qemuAccepts(t *testing.T, s *memstore.Store, dir string) (bool, string) {
	t.Helper()
	p := filepath.Join(dir, "case.qcow2")
	if err := s.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	return qemuInfoOK(t, p)
}

// qemuInfoOK runs qemu-img info on the image at path. It is safe to call from several
// goroutines.
func qemuInfoOK(t *testing.T, path string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "-f", "qcow2", path).CombinedOutput()
	if ctx.Err() != nil {
		t.Errorf("qemu-img info %s timed out", path)
	}
	return err == nil, strings.TrimSpace(string(out))
}

// classify checks that err is a clean error whose FormatError (if any) names one of names.
func classify(err error, names []string) error {
	if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) {
		return fmt.Errorf("error %v is neither ErrFormat nor ErrUnsupported", err)
	}
	var fe *FormatError
	if !errors.As(err, &fe) {
		return fmt.Errorf("error %v is not a *FormatError", err)
	}
	if !slices.Contains(names, fe.Field) {
		return fmt.Errorf("error names field %q, want one of %q: %v", fe.Field, names, err)
	}
	return nil
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

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

const (
	refuseMore = 1  // we refuse, QEMU opens
	acceptMore = -1 // we accept, QEMU refuses
)

// limitDifference says whether, and why, our answer for c differs from QEMU's by design.
// Where we refuse what QEMU opens, it is because QEMU reads zeros past the end of the file,
// checks some tables only when it uses them, or serves what qnbd does not (AES); where we open
// what QEMU refuses, it is because QEMU reads the bitmap directory, which qnbd ignores.
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
		if v >= HeaderV3MinLength && v < cs && v%8 != 0 && (v >= h.BackingFileOffset || binary.BigEndian.Uint32(li.cluster0[v:]) == 0) {
			return "header_length not a multiple of 8: the spec forbids it, QEMU does not check", refuseMore
		}
		if v == cs {
			return "a header as long as the cluster leaves the backing name inside it", refuseMore
		}
	case "crypt_method":
		if v == uint64(CryptAES) {
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
		if v*cs <= MaxRefTableBytes && outside(uint64(h.RefTableOffset), v*cs) {
			return outsideWhy, refuseMore
		}
	case "autoclear_features":
		if v&AutoclearDataFileRaw != 0 {
			return "raw external data bit without an external data file: the spec forbids it, QEMU ignores it when reading", refuseMore
		}
	case "size":
		if v <= 1 {
			return "the bitmap no longer matches the disk size: QEMU reads the bitmap directory, qnbd ignores bitmaps", acceptMore
		}
	case "bitmap_directory_size":
		if v == bitmapDirEntryFixedSize {
			return "the directory entry is cut short: QEMU reads the bitmap directory, qnbd ignores bitmaps", acceptMore
		}
	}
	return "", 0
}

// rawExt encodes one header extension record: type, length, data, padding to 8.
func rawExt(typ uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	return append(b, make([]byte, pad8(uint64(len(data)))-uint64(len(data)))...)
}

// rewriteExtensions replaces the extension area of the image in s with recs (end marker
// added unless noEnd), and moves the backing file name, if any, right after it.
func rewriteExtensions(t *testing.T, s *memstore.Store, recs [][]byte, noEnd bool) {
	t.Helper()
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	c0 := make([]byte, h.ClusterSize())
	copy(c0, h.EncodeFixed())
	off := uint64(h.HeaderLength)
	for _, r := range recs {
		off += uint64(copy(c0[off:], r))
	}
	if !noEnd {
		off += 8 // end marker: already zero
	}
	if h.BackingFile != "" {
		copy(c0[off:], h.BackingFile)
		binary.BigEndian.PutUint64(c0[offBackingFileOffset:], off)
	}
	if _, err := s.WriteAt(c0, 0); err != nil {
		t.Fatal(err)
	}
}

func storeOf(t *testing.T, path string) *memstore.Store {
	t.Helper()
	s, err := memstore.FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestHeaderExtras is §6.1 C: malformed and unusual layouts beyond the numeric matrix. Each
// case states our expected answer (success, or the field a FormatError names) and QEMU's,
// which `qemu-img info` confirms.
func TestHeaderExtras(t *testing.T) {
	dir := t.TempDir()
	img := func(name string, args ...string) string { // args end with the size
		p := filepath.Join(dir, name)
		n := len(args) - 1
		qemuImgOutput(t, append(append([]string{"create", "-q", "-f", "qcow2"}, args[:n]...), p, args[n])...)
		return p
	}
	backingRaw := filepath.Join(dir, "b.raw")
	qemuImgOutput(t, "create", "-q", "-f", "raw", backingRaw, "1M")
	plain := img("plain.qcow2", "1M")
	withBacking := img("backed.qcow2", "-b", backingRaw, "-F", "raw", "1M")
	v2 := img("v2.qcow2", "-o", "compat=0.10", "-b", backingRaw, "-F", "raw", "1M")
	dataFile := img("df.qcow2", "-o", "data_file="+filepath.Join(dir, "df.raw"), "1M")
	dataFileRaw := img("dfraw.qcow2", "-o", "data_file="+filepath.Join(dir, "dfr.raw")+",data_file_raw=on", "1M")
	dataBacking := img("dfb.qcow2", "-o", "data_file="+filepath.Join(dir, "dfb.raw"), "-b", backingRaw, "-F", "raw", "1M")
	extL2 := img("extl2.qcow2", "-o", "extended_l2=on,cluster_size=16384", "1M")
	bitmapped := img("bm.qcow2", "1M")
	qemuImgOutput(t, "bitmap", "--add", bitmapped, "bm0")
	type extra struct {
		name   string
		base   string
		mutate func(t *testing.T, s *memstore.Store)
		field  string // "" = we accept
		qemuOK bool
		check  func(t *testing.T, h *Header) // extra checks when we accept
		why    string                        // why we differ from QEMU, when we do
	}
	poke8 := func(off int64, v uint64) func(*testing.T, *memstore.Store) {
		return func(t *testing.T, s *memstore.Store) { poke(t, s, off, v) }
	}
	bf := rawExt(ExtBackingFormat, []byte("raw"))
	cases := []extra{
		{name: "duplicate backing format extension", base: withBacking, field: "header extension type", qemuOK: true,
			why:    "the spec allows each extension once; QEMU keeps the last copy",
			mutate: func(t *testing.T, s *memstore.Store) { rewriteExtensions(t, s, [][]byte{bf, bf}, false) }},
		{name: "duplicate feature name table", base: plain, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				ft := rawExt(ExtFeatureNames, append([]byte{0, 7}, make([]byte, 46)...))
				rewriteExtensions(t, s, [][]byte{ft, ft}, false)
			}},
		{name: "duplicate unknown extension", base: plain, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				u := rawExt(0x12345678, []byte("abc"))
				rewriteExtensions(t, s, [][]byte{u, u}, false)
			},
			check: func(t *testing.T, h *Header) {
				if len(h.Extensions.Unknown) != 2 {
					t.Errorf("%d unknown extensions kept", len(h.Extensions.Unknown))
				}
			}},
		{name: "zero-length unknown extension", base: plain, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				rewriteExtensions(t, s, [][]byte{rawExt(0x0badf00d, nil)}, false)
			}},
		{name: "zero-length backing format", base: withBacking, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				rewriteExtensions(t, s, [][]byte{rawExt(ExtBackingFormat, nil)}, false)
			},
			check: func(t *testing.T, h *Header) {
				if h.Extensions.BackingFormat != "" || h.BackingFile == "" {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "no end marker, extensions fill the area", base: withBacking, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) { rewriteExtensions(t, s, [][]byte{bf}, true) }},
		{name: "extension crossing the end of the cluster", base: plain, field: "header extension length", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) {
				// An unknown extension 8 bytes before the cluster end claiming 16 bytes.
				fill := rawExt(0x11111111, make([]byte, 65536-112-8-8))
				rewriteExtensions(t, s, [][]byte{fill, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 0x22222222), 16)}, true)
			}},
		// The header is valid: the name can come from the command line (OpenOptions.DataFile).
		// Open must refuse when none is given, as qemu-io does ("'data-file' is required for
		// this image"); qemu-img info, which does no I/O, opens it.
		{name: "data-file bit without a name", base: dataFile, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) { rewriteExtensions(t, s, nil, false) },
			check: func(t *testing.T, h *Header) {
				if !h.HasDataFile() || h.Extensions.DataFile != "" {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "data-file name without the bit", base: dataFile, field: "external data file name extension", qemuOK: true,
			why:    "QEMU ignores the stray name; we refuse the inconsistency",
			mutate: poke8(offIncompatibleFeatures, 0)},
		{name: "raw-data bit without data-file", base: plain, field: "autoclear_features", qemuOK: true,
			why:    "the spec forbids it; QEMU ignores the bit when reading",
			mutate: poke8(offAutoclearFeatures, AutoclearDataFileRaw)},
		{name: "data-file with a backing file (qemu-img made)", base: dataBacking, qemuOK: true,
			check: func(t *testing.T, h *Header) {
				if !h.HasDataFile() || h.BackingFile == "" {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "raw data-file with a backing file", base: dataBacking, field: "backing_file_offset", qemuOK: true,
			why:    "the spec: backing files are incompatible with raw external data; QEMU only refuses to create it",
			mutate: poke8(offAutoclearFeatures, AutoclearDataFileRaw)},
		{name: "raw data-file (qemu-img made)", base: dataFileRaw, qemuOK: true},
		{name: "extended L2 with cluster_bits 13", base: extL2, field: "cluster_bits", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) { poke(t, s, offClusterBits, uint32(13)) }},
		{name: "unknown compression type 2 with bit 3", base: plain, field: "compression_type", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) {
				poke(t, s, offIncompatibleFeatures, IncompatCompression)
				poke(t, s, offCompressionType, uint8(2))
			}},
		{name: "corrupt bit (header accepts; Open refuses read-write)", base: plain, qemuOK: true, mutate: poke8(offIncompatibleFeatures, IncompatCorrupt),
			check: func(t *testing.T, h *Header) {
				if !h.Corrupt() {
					t.Error("corrupt bit lost")
				}
			}},
		{name: "dirty bit", base: plain, qemuOK: true, mutate: poke8(offIncompatibleFeatures, IncompatDirty),
			check: func(t *testing.T, h *Header) {
				if !h.Dirty() {
					t.Error("dirty bit lost")
				}
			}},
		{name: "unknown incompatible bit named by the feature table", base: plain, field: "incompatible_features", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) {
				name := append([]byte("shiny new thing"), make([]byte, 46-15)...)
				rewriteExtensions(t, s, [][]byte{rawExt(ExtFeatureNames, append([]byte{FeatureIncompatible, 9}, name...))}, false)
				poke(t, s, offIncompatibleFeatures, uint64(1)<<9)
			}},
		{name: "bitmaps extension with garbage, autoclear bit clear", base: bitmapped, qemuOK: true,
			why: "", mutate: func(t *testing.T, s *memstore.Store) {
				poke(t, s, offAutoclearFeatures, uint64(0))
				bm := rawExt(ExtBitmaps, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, 0xffffffff_00000007), 1<<40), 12345))
				rewriteExtensions(t, s, [][]byte{bm}, false)
			},
			check: func(t *testing.T, h *Header) {
				if h.Extensions.Bitmaps == nil || h.Extensions.Bitmaps.Reserved != 7 {
					t.Errorf("bitmaps extension not kept: %+v", h.Extensions.Bitmaps)
				}
			}},
		{name: "bitmaps extension with the autoclear bit set and reserved != 0", base: bitmapped, field: "bitmaps extension reserved field", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) {
				h, _ := ReadHeader(s)
				b := *h.Extensions.Bitmaps
				bm := rawExt(ExtBitmaps, binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, uint64(b.Count)<<32|1), b.DirectorySize), uint64(b.DirectoryStart)))
				rewriteExtensions(t, s, [][]byte{bm}, false)
			}},
		{name: "crypto extension in an unencrypted image", base: plain, field: "full disk encryption header extension", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) {
				rewriteExtensions(t, s, [][]byte{rawExt(ExtFullDiskCrypto, make([]byte, 16))}, false)
			}},
		{name: "header_length 120 with an unknown additional field", base: plain, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				h, _ := ReadHeader(s)
				exts := h.Extensions.encode()
				poke(t, s, offHeaderLength, uint32(120))
				poke(t, s, 112, uint64(0xfeedface))
				if _, err := s.WriteAt(append(exts, make([]byte, 8)...), 120); err != nil {
					t.Fatal(err)
				}
			},
			check: func(t *testing.T, h *Header) {
				b := h.EncodeFixed()
				if len(b) != 120 || binary.BigEndian.Uint64(b[112:]) != 0xfeedface {
					t.Errorf("unknown additional field not preserved: % x", b[104:])
				}
			}},
		{name: "version 2 with a backing format extension", base: v2, qemuOK: true,
			check: func(t *testing.T, h *Header) {
				if h.Version != 2 || h.Extensions.BackingFormat != "raw" || h.BackingFile != backingRaw {
					t.Errorf("got %+v", h)
				}
			}},
		{name: "backing name padded with NULs", base: withBacking, qemuOK: true,
			mutate: func(t *testing.T, s *memstore.Store) {
				h, _ := ReadHeader(s)
				poke(t, s, offBackingFileSize, uint32(len(h.BackingFile)+3))
			},
			check: func(t *testing.T, h *Header) {
				if h.BackingFile != backingRaw {
					t.Errorf("backing name %q", h.BackingFile)
				}
			}},
		{name: "file shorter than the header", base: plain, field: "", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) { s.Truncate(100) }},
		{name: "empty file", base: plain, field: "", qemuOK: false,
			mutate: func(t *testing.T, s *memstore.Store) { s.Truncate(0) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := storeOf(t, c.base)
			if c.mutate != nil {
				c.mutate(t, s)
			}
			var h *Header
			err := runMeasured(t, c.name, func() error {
				var err error
				if h, err = ReadHeader(s); err == nil {
					_, err = ReadSnapshots(s, h)
				}
				return err
			})
			qok, qout := qemuAccepts(t, s, dir)
			if qok != c.qemuOK {
				t.Errorf("qemu-img info: accepted=%v, the case says %v: %s", qok, c.qemuOK, lastLine(qout))
			}
			wantOK := c.field == "" && !strings.HasPrefix(c.name, "file shorter") && c.name != "empty file"
			switch {
			case wantOK && err != nil:
				t.Fatalf("refused: %v", err)
			case wantOK:
				if c.check != nil {
					c.check(t, h)
				}
			case err == nil:
				t.Fatalf("accepted, want an error naming %q", c.field)
			case c.field == "":
				if !errors.Is(err, ErrFormat) {
					t.Fatalf("got %v, want ErrFormat", err)
				}
			default:
				if cerr := classify(err, []string{c.field}); cerr != nil {
					t.Fatal(cerr)
				}
			}
			if (err == nil) != qok && c.why == "" {
				t.Errorf("we differ from QEMU without a documented reason (ours: %v; qemu: %s)", err, lastLine(qout))
			}
			if c.name == "unknown incompatible bit named by the feature table" && !strings.Contains(err.Error(), "shiny new thing") {
				t.Errorf("the error does not name the feature: %v", err)
			}
		})
	}
}

// TestBackingNamesInImages: images whose headers name json:, protocol or absolute backing
// files decode (the header is valid), and resolveBackingName then refuses the json: and
// protocol ones, as qnbd's policy says.
func TestBackingNamesInImages(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name   string
		refuse bool
	}{
		{`json:{"driver":"nbd","server":{"type":"inet","host":"127.0.0.1","port":"10809"}}`, true},
		{"nbd:///etc/shadow", true},
		{"nbd://127.0.0.1:10809/export", true},
		{"http://127.0.0.1/disk.img", true},
		{"/etc/shadow", false},
		{"sub/relative.raw", false},
	} {
		p := filepath.Join(dir, "x.qcow2")
		os.Remove(p)
		qemuImgOutput(t, "create", "-q", "-f", "qcow2", "-u", "-b", c.name, "-F", "raw", p, "1M")
		h, err := ReadHeader(openStorage(t, p))
		if err != nil {
			t.Fatalf("%q: header refused: %v", c.name, err)
		}
		if h.BackingFile != c.name {
			t.Fatalf("backing name %q, want %q", h.BackingFile, c.name)
		}
		got, err := resolveBackingName(dir, h.BackingFile)
		if c.refuse != (err != nil) {
			t.Errorf("%q: resolveBackingName = %q, %v", c.name, got, err)
		}
		if err != nil && !errors.Is(err, ErrUnsupported) {
			t.Errorf("%q: %v is not ErrUnsupported", c.name, err)
		}
	}
}
