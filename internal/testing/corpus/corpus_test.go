// Tests that the built images are valid, have the features they claim, and read as Expected.
package corpus

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// buildAll builds the whole catalogue once for this test binary into a fresh directory, so
// that these tests judge the generator itself, not a cached corpus.
var buildAll = struct {
	dir  string
	imgs []*Image
	dur  time.Duration
	err  error
}{}

func built(t *testing.T) []*Image {
	t.Helper()
	if buildAll.imgs == nil && buildAll.err == nil {
		dir, err := os.MkdirTemp("", "corpus-test-")
		if err != nil {
			t.Fatal(err)
		}
		buildAll.dir = dir
		start := time.Now()
		buildAll.imgs, buildAll.err = Build(context.Background(), dir)
		buildAll.dur = time.Since(start)
	}
	if buildAll.err != nil {
		t.Fatal(buildAll.err)
	}
	return buildAll.imgs
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildAll.dir != "" {
		os.RemoveAll(buildAll.dir)
	}
	os.Exit(code)
}

func TestBuildIsFastAndComplete(t *testing.T) {
	imgs := built(t)
	// About 1 s on an idle 2-core machine. Logged, not asserted: a test asserts no timing
	// (a loaded machine stretches any bound); the build's cost shows in make test's time.
	t.Logf("built %d images in %v", len(imgs), buildAll.dur)
	if len(imgs) != len(Specs()) {
		t.Fatalf("%d images for %d specs", len(imgs), len(Specs()))
	}
	// Every feature the brief asks for is present somewhere.
	for _, f := range []string{
		FeatureRefcountBits + "1", FeatureRefcountBits + "2", FeatureRefcountBits + "4",
		FeatureRefcountBits + "8", FeatureRefcountBits + "16", FeatureRefcountBits + "32",
		FeatureRefcountBits + "64", FeatureV2, FeatureExtendedL2, FeatureCompressed + "zlib",
		FeatureCompressed + "zstd", FeatureCompressedRW, FeatureChain3, FeatureBackingRaw,
		FeatureOverlayLarge, FeatureDataFile, FeatureDataFileRaw, FeatureSnapshot,
		FeaturePrealloc + "metadata", FeaturePrealloc + "falloc", FeaturePrealloc + "full",
		FeatureLarge, FeatureDirty, FeatureLazyRefcount, FeatureOddSize, FeatureZeroClusters,
		FeatureDiscard, FeatureEmpty, FeatureL2Boundary, FeatureSubclusters,
	} {
		if len(WithFeature(imgs, f)) == 0 {
			t.Errorf("no image has feature %s", f)
		}
	}
	for bits := 9; bits <= 21; bits++ {
		f := FeatureClusterSize + fmt.Sprint(1<<bits)
		if len(WithFeature(imgs, f)) == 0 {
			t.Errorf("no image has %s", f)
		}
	}
	// Refcount widths 1, 16 and 64 at both ends of the cluster range.
	for _, cs := range []int{512, 2 << 20} {
		for _, w := range []int{1, 16, 64} {
			if Lookup(imgs, fmt.Sprintf("cluster-%s-refcount-%d", sizeName(int64(cs)), w)) == nil {
				t.Errorf("no image with %d-byte clusters and %d-bit refcounts", cs, w)
			}
		}
	}
}

// TestImagesPassQemuCheck: every image but the deliberately dirty one is clean; the dirty
// one shows the stale refcounts a crash with lazy refcounts leaves, and repairs to clean.
func TestImagesPassQemuCheck(t *testing.T) {
	ctx := context.Background()
	for _, img := range built(t) {
		for l := img; l != nil; l = l.Backing {
			if l.Format != "qcow2" {
				continue
			}
			res, err := Check(ctx, l.Path, CheckOptions{Format: "qcow2"})
			if err != nil {
				t.Fatalf("%s: %v", l.Name, err)
			}
			if l.Has(FeatureDirty) {
				if res.ExitCode != 2 || res.Corruptions == 0 {
					t.Errorf("%s: check of the dirty image: exit %d corruptions %d, want exit 2 with stale refcounts", l.Name, res.ExitCode, res.Corruptions)
				}
				continue
			}
			if !res.Clean() || res.ImageEndOffset == 0 || res.TotalClusters == 0 {
				t.Errorf("%s: qemu-img check: %+v", l.Name, res)
			}
		}
	}
}

func TestDirtyImageRepairs(t *testing.T) {
	ctx := context.Background()
	img := Lookup(built(t), "dirty-lazy-refcounts")
	c, err := Copy(ctx, img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// Repairing leaks only cannot fix refcounts of 0 for used clusters: qemu-img gives up
	// with exit 1 and no JSON, which Check reports as a result, not an error.
	res, err := Check(ctx, c.Path, CheckOptions{Format: "qcow2", Repair: "leaks"})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 1 || !strings.Contains(res.Stderr, "rebuild refcount") {
		t.Errorf("check -r leaks on the dirty copy: exit %d, stderr %q", res.ExitCode, res.Stderr)
	}
	res, err = Check(ctx, c.Path, CheckOptions{Format: "qcow2", Repair: "all"})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.CorruptionsFixed == 0 {
		t.Errorf("check -r all on the dirty copy: %+v", res)
	}
	info, err := GetInfo(ctx, c.Path, "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if info.DirtyFlag {
		t.Errorf("dirty flag still set after repair")
	}
	// The original is untouched.
	info, err = GetInfo(ctx, img.Path, "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if !info.DirtyFlag {
		t.Errorf("repairing the copy cleared the original's dirty flag")
	}
	checkContent(t, c, c.Path)
}

// TestImagesHaveTheirFeatures checks each claimed feature against qemu-img info, map and
// check.
func TestImagesHaveTheirFeatures(t *testing.T) {
	ctx := context.Background()
	for _, img := range built(t) {
		info, err := GetInfo(ctx, img.Path, img.Format)
		if err != nil {
			t.Fatal(err)
		}
		q := info.FormatSpecific.Data
		errorf := func(format string, args ...any) { t.Errorf(img.Name+": "+format, args...) }
		if info.VirtualSize != img.Size || info.Format != img.Format {
			errorf("info says %s of %d bytes, want %s of %d", info.Format, info.VirtualSize, img.Format, img.Size)
		}
		if info.ClusterSize != img.ClusterSize || q.RefcountBits != img.RefcountBits {
			errorf("cluster %d refcount %d, want %d and %d", info.ClusterSize, q.RefcountBits, img.ClusterSize, img.RefcountBits)
		}
		wantCompat := "1.1"
		if img.Has(FeatureV2) {
			wantCompat = "0.10"
		}
		if q.Compat != wantCompat {
			errorf("compat %s, want %s", q.Compat, wantCompat)
		}
		for _, c := range []struct {
			name      string
			got, want bool
		}{
			{"extended-l2", q.ExtendedL2, img.Has(FeatureExtendedL2)},
			{"lazy-refcounts", q.LazyRefcounts, img.Has(FeatureLazyRefcount)},
			{"dirty-flag", info.DirtyFlag, img.Has(FeatureDirty)},
			{"data-file-raw", q.DataFileRaw, img.Has(FeatureDataFileRaw)},
			{"zstd", q.CompressionType == "zstd", img.Has(FeatureCompressed + "zstd")},
			{"corrupt", q.Corrupt, false},
			{"odd size", img.Size%img.ClusterSize != 0, img.Has(FeatureOddSize)},
			{"4 TiB", img.Size == 4<<40, img.Has(FeatureLarge)},
		} {
			if c.got != c.want {
				errorf("%s is %v, want %v", c.name, c.got, c.want)
			}
		}
		if q.DataFile != img.DataFile {
			errorf("data file %q, want %q", q.DataFile, img.DataFile)
		}
		var snaps []string
		for _, s := range info.Snapshots {
			snaps = append(snaps, s.Name)
		}
		if !slices.Equal(snaps, img.Snapshots()) {
			errorf("snapshots %v, want %v", snaps, img.Snapshots())
		}
		if img.Backing != nil {
			if info.BackingFilename != filepath.Base(img.Backing.Path) || info.BackingFilenameFormat != img.Backing.Format {
				errorf("backing %q (%s), want %q (%s)", info.BackingFilename, info.BackingFilenameFormat, filepath.Base(img.Backing.Path), img.Backing.Format)
			}
		} else if info.BackingFilename != "" {
			errorf("unexpected backing file %q", info.BackingFilename)
		}

		res, err := Check(ctx, img.Path, CheckOptions{Format: "qcow2"})
		if err != nil {
			t.Fatal(err)
		}
		compressed := img.Has(FeatureCompressed+"zlib") || img.Has(FeatureCompressed+"zstd")
		if (res.CompressedClusters > 0) != compressed {
			errorf("%d compressed clusters", res.CompressedClusters)
		}
		m, err := Map(ctx, img.Path, img.Format)
		if err != nil {
			t.Fatal(err)
		}
		checkMap(t, img, m)
	}
}

// checkMap checks the allocation-related features against qemu-img map.
func checkMap(t *testing.T, img *Image, m []MapEntry) {
	t.Helper()
	at := func(off int64) MapEntry {
		for _, e := range m {
			if e.Start <= off && off < e.Start+e.Length {
				return e
			}
		}
		t.Fatalf("%s: qemu-img map does not cover offset %d", img.Name, off)
		return MapEntry{}
	}
	var end int64
	for _, e := range m {
		if e.Start != end {
			t.Errorf("%s: map has a gap or overlap at %d", img.Name, e.Start)
		}
		end = e.Start + e.Length
	}
	if end != img.Size {
		t.Errorf("%s: map ends at %d, size %d", img.Name, end, img.Size)
	}
	maxDepth := 0
	for _, e := range m {
		maxDepth = max(maxDepth, e.Depth)
	}
	wantDepth := 0
	for b := img.Backing; b != nil; b = b.Backing {
		wantDepth++
	}
	if maxDepth != wantDepth {
		t.Errorf("%s: deepest map layer %d, chain depth %d", img.Name, maxDepth, wantDepth)
	}
	if img.Has(FeatureZeroClusters) {
		found := false
		for _, e := range m {
			found = found || (e.Depth == 0 && e.Present && e.Zero && !e.Data)
		}
		if !found {
			t.Errorf("%s: claims zero clusters but map shows none", img.Name)
		}
	}
	for i, op := range img.Ops {
		if op.Kind != OpDiscard {
			continue
		}
		for off := op.Off; off < op.Off+op.Len; off += img.ClusterSize {
			if writtenLater(img, i, off, img.ClusterSize) {
				continue
			}
			if e := at(off); e.Data {
				t.Errorf("%s: discarded offset %d is still data: %+v", img.Name, off, e)
			}
		}
	}
	for _, mode := range []string{"metadata", "falloc", "full"} {
		if img.Has(FeaturePrealloc + mode) {
			e := at(8 << 20) // never written
			if !e.Data || e.Zero != (mode == "metadata") {
				t.Errorf("%s: unwritten range maps as %+v", img.Name, e)
			}
		}
	}
	if img.Has(FeatureEmpty) && (len(m) != 1 || m[0].Data || m[0].Present) {
		t.Errorf("%s: empty image maps as %+v", img.Name, m)
	}
}

// writtenLater reports whether an op after ops[i] writes data into [off, off+n).
func writtenLater(img *Image, i int, off, n int64) bool {
	for _, op := range img.Ops[i+1:] {
		if (op.Kind == OpStamp || op.Kind == OpText || op.Kind == OpFill) && op.Off < off+n && off < op.Off+op.Len {
			return true
		}
	}
	return false
}

// TestImagesReadAsExpected converts each image to raw with qemu-img and compares the ranges
// around every write, the first and last MiB and a few random windows with Expected.
func TestImagesReadAsExpected(t *testing.T) {
	for _, img := range built(t) {
		t.Run(img.Name, func(t *testing.T) {
			t.Parallel() // overlaps qemu-img's runs with the comparisons
			checkContent(t, img, "")
		})
	}
}

// checkContent compares qemu-img's view of img (optionally a copy at path) with Expected.
func checkContent(t *testing.T, img *Image, path string) {
	t.Helper()
	ctx := context.Background()
	if path == "" {
		path = img.Path
	}
	raw := filepath.Join(t.TempDir(), "content.raw")
	if err := ToRaw(ctx, path, img.Format, raw); err != nil {
		t.Fatal(err)
	}
	compareRanges(t, img.Name, raw, img.Size, interestingRanges(img), img.Expected)
	os.Remove(raw)
	for _, snap := range img.Snapshots() {
		if err := ToRawSnapshot(ctx, path, snap, raw); err != nil {
			t.Fatal(err)
		}
		compareRanges(t, img.Name+"@"+snap, raw, img.Size, interestingRanges(img), func(off int64, p []byte) {
			img.ExpectedSnapshot(snap, off, p)
		})
		os.Remove(raw)
	}
	// A raw external data file holds the guest data at guest offsets.
	if img.Has(FeatureDataFileRaw) {
		compareRanges(t, img.Name+" data file", img.DataFile, img.Size, interestingRanges(img), img.Expected)
	}
}

type span struct{ off, n int64 }

// interestingRanges covers every op of the chain with one cluster of margin, the first and
// last MiB, and 8 random 4 KiB windows (seeded by the name, so runs repeat).
func interestingRanges(img *Image) []span {
	var out []span
	add := func(off, n int64) {
		off = max(off, 0)
		end := min(off+n, img.Size)
		if end > off {
			out = append(out, span{off, end - off})
		}
	}
	// One cluster either side (at most 256 KiB) shows data bleeding into neighbours.
	margin := min(max(img.ClusterSize, 4096), 256<<10)
	for l := img; l != nil; l = l.Backing {
		for _, op := range l.Ops {
			if op.changesData() {
				add(op.Off-margin, op.Len+2*margin)
			}
		}
	}
	add(0, 1<<20)
	add(img.Size-1<<20, 1<<20)
	var seed int64
	for _, c := range img.Name {
		seed = seed*31 + int64(c)
	}
	r := rand.New(rand.NewSource(seed))
	for i := 0; i < 8; i++ {
		add(r.Int63n(img.Size), 4096)
	}
	// Merge overlaps so that no byte is compared twice.
	slices.SortFunc(out, func(a, b span) int { return int(min(max(a.off-b.off, -1), 1)) })
	merged := out[:0]
	for _, s := range out {
		if n := len(merged); n > 0 && s.off <= merged[n-1].off+merged[n-1].n {
			last := &merged[n-1]
			last.n = max(last.n, s.off+s.n-last.off)
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

func compareRanges(t *testing.T, name, rawPath string, size int64, spans []span, expected func(int64, []byte)) {
	t.Helper()
	f, err := os.Open(rawPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() < size {
		t.Fatalf("%s: raw file %s has %v bytes, want %d (%v)", name, rawPath, st.Size(), size, err)
	}
	for _, s := range spans {
		for off := s.off; off < s.off+s.n; off += 4 << 20 {
			n := min(4<<20, s.off+s.n-off)
			got, want := make([]byte, n), make([]byte, n)
			if _, err := f.ReadAt(got, off); err != nil {
				t.Fatalf("%s: reading %d bytes at %d: %v", name, n, off, err)
			}
			expected(off, want)
			if i := firstDiff(got, want); i >= 0 {
				t.Errorf("%s: byte %d is %#x, want %#x", name, off+int64(i), got[i], want[i])
				return
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

func TestSharedBuildsOnceAndDetectsChanges(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "shared")
	names := []string{"empty", "backing-chain-3", "data-file"}
	imgs, built1, err := loadOrBuild(ctx, root, names...)
	if err != nil || !built1 {
		t.Fatalf("first loadOrBuild: built=%v err=%v", built1, err)
	}
	imgs2, built2, err := loadOrBuild(ctx, root, names...)
	if err != nil || built2 {
		t.Fatalf("second loadOrBuild: built=%v err=%v", built2, err)
	}
	if len(imgs2) != len(imgs) || imgs2[len(imgs2)-1].Path != imgs[len(imgs)-1].Path {
		t.Fatalf("reloaded manifest differs")
	}
	chain := Lookup(imgs2, "backing-chain-3")
	if chain.Backing == nil || chain.Backing.Backing == nil || chain.Backing.Backing.Format != "raw" {
		t.Fatalf("reloaded chain lost its backing images: %+v", chain)
	}
	// A modified image makes the next call rebuild.
	f, err := os.OpenFile(Lookup(imgs, "empty").Path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 512))
	f.Close()
	if _, built3, err := loadOrBuild(ctx, root, names...); err != nil || !built3 {
		t.Fatalf("after modification: built=%v err=%v, want a rebuild", built3, err)
	}
}

func TestCopyIsIndependent(t *testing.T) {
	ctx := context.Background()
	imgs := built(t)
	for _, name := range []string{"data-file-raw", "backing-chain-3"} {
		img := Lookup(imgs, name)
		dir := t.TempDir()
		c, err := Copy(ctx, img, dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range c.Files() {
			if filepath.Dir(f) != dir {
				t.Errorf("%s: copy has file %s outside %s", name, f, dir)
			}
		}
		info, err := GetInfo(ctx, c.Path, c.Format)
		if err != nil {
			t.Fatal(err)
		}
		if info.FormatSpecific.Data.DataFile != c.DataFile {
			t.Errorf("%s: copy's data file is %q, want %q", name, info.FormatSpecific.Data.DataFile, c.DataFile)
		}
		same, err := Compare(ctx, img.Path, img.Format, c.Path, c.Format)
		if err != nil || !same {
			t.Fatalf("%s: copy differs from original: same=%v err=%v", name, same, err)
		}
		if _, err := runTool(ctx, "qemu-io", "-f", "qcow2", "-c", "write -q -P 0xee 0 4096", c.Path); err != nil {
			t.Fatal(err)
		}
		same, err = Compare(ctx, img.Path, img.Format, c.Path, c.Format)
		if err != nil || same {
			t.Fatalf("%s: after writing to the copy: same=%v err=%v", name, same, err)
		}
		checkContent(t, img, "") // the original still reads as before
	}
}

// TestCheckReportsLeaks makes a leak by hand (a refcount of 1 for a cluster nothing uses) and
// checks that Check parses it, and that repair fixes it.
func TestCheckReportsLeaks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "leak.qcow2")
	if _, err := runTool(ctx, "qemu-img", "create", "-q", "-f", "qcow2", path, "16M"); err != nil {
		t.Fatal(err)
	}
	if _, err := runTool(ctx, "qemu-io", "-f", "qcow2", "-c", "write -q 0 64k", path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	const cs = 65536
	reftable := binary.BigEndian.Uint64(b[48:56])
	refblock := binary.BigEndian.Uint64(b[reftable : reftable+8])
	leaked := uint64(len(b)+cs-1) / cs // the first cluster past the end
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var one [2]byte
	binary.BigEndian.PutUint16(one[:], 1)
	if _, err := f.WriteAt(one[:], int64(refblock+2*leaked)); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(leaked+1) * cs); err != nil {
		t.Fatal(err)
	}
	f.Close()

	res, err := Check(ctx, path, CheckOptions{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || res.Leaks != 1 || res.Corruptions != 0 || res.Clean() {
		t.Fatalf("check of a leaky image: %+v", res)
	}
	if !strings.Contains(res.Stderr, "Leaked cluster") {
		t.Errorf("stderr does not name the leak: %q", res.Stderr)
	}
	res, err = Check(ctx, path, CheckOptions{Format: "qcow2", Repair: "leaks"})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || res.LeaksFixed != 1 {
		t.Fatalf("check -r leaks: %+v", res)
	}
}

func TestMapReportsOffsets(t *testing.T) {
	ctx := context.Background()
	img := Lookup(built(t), "zero-clusters")
	m, err := Map(ctx, img.Path, "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if !m[0].Data || !m[0].HasOffset || m[0].Offset == 0 || m[0].Offset%img.ClusterSize != 0 {
		t.Errorf("first extent %+v: want data at a cluster-aligned host offset", m[0])
	}
	last := m[len(m)-1]
	if last.Data || last.HasOffset || !last.Zero {
		t.Errorf("unwritten tail %+v: want zero, no data, no offset", last)
	}
}

func TestStampAndTextArePositional(t *testing.T) {
	a := make([]byte, 4096)
	FillStamp(1, 1000, a)
	b := make([]byte, 4096)
	FillStamp(1, 1001, b) // shifted by one byte
	if bytes.Equal(a[1:], b[:len(b)-1]) == false {
		// the shifted view of the same stream must line up...
		t.Fatalf("FillStamp is not a function of the offset")
	}
	c := make([]byte, 4096)
	FillStamp(1, 1000+512, c) // the same data from 512 bytes further on
	if bytes.Equal(a, c) {
		t.Fatalf("stamps 512 bytes apart are equal")
	}
	d := make([]byte, 4096)
	FillStamp(2, 1000, d)
	if bytes.Equal(a, d) {
		t.Fatalf("different seeds give equal stamps")
	}
	for i := range a {
		if a[i] != Stamp(1, int64(1000+i)) {
			t.Fatalf("FillStamp and Stamp disagree at %d", i)
		}
	}
	txt := make([]byte, 32)
	FillText(0xab, 0x12340, txt)
	if string(txt) != "ab@000000012340\nab@000000012350\n" {
		t.Fatalf("FillText = %q", txt)
	}
}

func TestExpectedModel(t *testing.T) {
	base := &Image{Name: "b", Size: 1000, Ops: []Op{{Kind: OpFill, Seed: 7, Off: 0, Len: 1000}}}
	top := &Image{Name: "t", Size: 3000, Backing: base, Ops: []Op{
		{Kind: OpFill, Seed: 9, Off: 900, Len: 200},
		{Kind: OpSnapshot, Name: "s"},
		{Kind: OpZero, Off: 950, Len: 10},
	}}
	p := make([]byte, 3100)
	for i := range p {
		p[i] = 0xff
	}
	top.Expected(0, p)
	for i, c := range p {
		want := byte(0)
		switch {
		case i < 900:
			want = 7
		case i >= 950 && i < 960:
			want = 0
		case i < 1100:
			want = 9
		}
		if c != want {
			t.Fatalf("Expected byte %d = %d, want %d", i, c, want)
		}
	}
	q := make([]byte, 100)
	top.ExpectedSnapshot("s", 900, q)
	if !bytes.Equal(q, bytes.Repeat([]byte{9}, 100)) {
		t.Fatalf("ExpectedSnapshot = %v", q)
	}
}
