package qcow2

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// ccCreateCase is one set of create options, given both as CreateOptions and as qemu-img -o.
type ccCreateCase struct {
	name string
	o    CreateOptions
	qemu string // qemu-img create -o (without size)
	size string // qemu-img size argument ("" when taken from the backing file)
	// identical: qemu-img lays this image out exactly as we do, byte for byte.
	identical bool
	// sameEnd: image-end-offset agrees (our preallocation layouts differ for falloc/full).
	sameEnd bool
	// backing: make dir/base.qcow2 (8 MiB) and dir/base.raw (5000 bytes) first.
	backing bool
}

func ccCreateCases() []ccCreateCase {
	M := uint64(1) << 20
	G := uint64(1) << 30
	return []ccCreateCase{
		{name: "default-1G", o: CreateOptions{Size: G}, size: "1G", identical: true, sameEnd: true},
		{name: "size-0", o: CreateOptions{}, size: "0", identical: true, sameEnd: true},
		{name: "size-1000", o: CreateOptions{Size: 1000}, size: "1000", identical: true, sameEnd: true},
		{name: "4T", o: CreateOptions{Size: 4 << 40}, size: "4T", identical: true, sameEnd: true},
		{name: "c512-16M", o: CreateOptions{Size: 16 * M, ClusterSize: 512}, qemu: "cluster_size=512", size: "16M", identical: true, sameEnd: true},
		{name: "c512-1G", o: CreateOptions{Size: G, ClusterSize: 512}, qemu: "cluster_size=512", size: "1G", sameEnd: true},
		{name: "c2M-1G", o: CreateOptions{Size: G, ClusterSize: 2 << 20}, qemu: "cluster_size=2M", size: "1G", identical: true, sameEnd: true},
		{name: "c4k-refbits1", o: CreateOptions{Size: 64 * M, ClusterSize: 4096, RefcountBits: 1}, qemu: "cluster_size=4096,refcount_bits=1", size: "64M", identical: true, sameEnd: true},
		{name: "refbits8", o: CreateOptions{Size: G, RefcountBits: 8}, qemu: "refcount_bits=8", size: "1G", identical: true, sameEnd: true},
		{name: "refbits64", o: CreateOptions{Size: G, RefcountBits: 64}, qemu: "refcount_bits=64", size: "1G", identical: true, sameEnd: true},
		{name: "v2", o: CreateOptions{Size: G, Compat: "0.10"}, qemu: "compat=0.10", size: "1G", identical: true, sameEnd: true},
		{name: "extl2", o: CreateOptions{Size: G, ExtendedL2: true}, qemu: "extended_l2=on", size: "1G", identical: true, sameEnd: true},
		{name: "extl2-c16k", o: CreateOptions{Size: G, ExtendedL2: true, ClusterSize: 16384}, qemu: "extended_l2=on,cluster_size=16k", size: "1G", identical: true, sameEnd: true},
		{name: "lazy-zstd", o: CreateOptions{Size: G, LazyRefcounts: true, CompressionType: CompressionZstd}, qemu: "lazy_refcounts=on,compression_type=zstd", size: "1G", identical: true, sameEnd: true},
		{name: "backing-qcow2-size-from-base", o: CreateOptions{BackingFile: "base.qcow2", BackingFormat: "qcow2"}, qemu: "backing_file=base.qcow2,backing_fmt=qcow2", backing: true, identical: true, sameEnd: true},
		{name: "backing-raw-size-from-base", o: CreateOptions{BackingFile: "base.raw", BackingFormat: "raw"}, qemu: "backing_file=base.raw,backing_fmt=raw", backing: true, identical: true, sameEnd: true},
		{name: "backing-v2-bigger", o: CreateOptions{Size: G, Compat: "0.10", BackingFile: "base.qcow2", BackingFormat: "qcow2"}, qemu: "compat=0.10,backing_file=base.qcow2,backing_fmt=qcow2", size: "1G", backing: true, identical: true, sameEnd: true},
		{name: "datafile", o: CreateOptions{Size: 64 * M, DataFile: "t.data"}, qemu: "data_file=t.data", size: "64M", identical: true, sameEnd: true},
		{name: "datafile-raw", o: CreateOptions{Size: 64 * M, DataFile: "t.data", DataFileRaw: true}, qemu: "data_file=t.data,data_file_raw=on", size: "64M", identical: true, sameEnd: true},
		{name: "metadata-64M", o: CreateOptions{Size: 64 * M, Preallocation: "metadata"}, qemu: "preallocation=metadata", size: "64M", identical: true, sameEnd: true},
		{name: "metadata-c4k-64M", o: CreateOptions{Size: 64 * M, ClusterSize: 4096, Preallocation: "metadata"}, qemu: "preallocation=metadata,cluster_size=4k", size: "64M", sameEnd: true},
		{name: "metadata-c512-refbits1", o: CreateOptions{Size: 4 * M, ClusterSize: 512, RefcountBits: 1, Preallocation: "metadata"}, qemu: "preallocation=metadata,cluster_size=512,refcount_bits=1", size: "4M", sameEnd: true},
		{name: "metadata-odd-size", o: CreateOptions{Size: 3*M + 4096, Preallocation: "metadata"}, qemu: "preallocation=metadata", size: fmt.Sprint(3*M + 4096), identical: true, sameEnd: true},
		{name: "metadata-extl2-backing", o: CreateOptions{Size: 16 * M, ExtendedL2: true, Preallocation: "metadata", BackingFile: "base.qcow2", BackingFormat: "qcow2"}, qemu: "preallocation=metadata,extended_l2=on,backing_file=base.qcow2,backing_fmt=qcow2", size: "16M", backing: true, identical: true, sameEnd: true},
		{name: "metadata-datafile", o: CreateOptions{Size: 64 * M, DataFile: "t.data", Preallocation: "metadata"}, qemu: "preallocation=metadata,data_file=t.data", size: "64M", identical: true, sameEnd: true},
		{name: "metadata-datafile-raw-extl2", o: CreateOptions{Size: 64 * M, DataFile: "t.data", DataFileRaw: true, ExtendedL2: true, Preallocation: "metadata"}, qemu: "preallocation=metadata,data_file=t.data,data_file_raw=on,extended_l2=on", size: "64M", identical: true, sameEnd: true},
		{name: "metadata-v2", o: CreateOptions{Size: 16 * M, Compat: "0.10", Preallocation: "metadata"}, qemu: "preallocation=metadata,compat=0.10", size: "16M", identical: true, sameEnd: true},
		{name: "falloc", o: CreateOptions{Size: 16 * M, Preallocation: "falloc"}, qemu: "preallocation=falloc", size: "16M"},
		{name: "full", o: CreateOptions{Size: 16 * M, Preallocation: "full"}, qemu: "preallocation=full", size: "16M"},
		{name: "full-extl2", o: CreateOptions{Size: 16 * M, Preallocation: "full", ExtendedL2: true}, qemu: "preallocation=full,extended_l2=on", size: "16M"},
		{name: "falloc-datafile", o: CreateOptions{Size: 16 * M, DataFile: "t.data", Preallocation: "falloc"}, qemu: "preallocation=falloc,data_file=t.data", size: "16M", identical: true, sameEnd: true},
		{name: "full-datafile-raw", o: CreateOptions{Size: 16 * M, DataFile: "t.data", DataFileRaw: true, Preallocation: "full"}, qemu: "preallocation=full,data_file=t.data,data_file_raw=on", size: "16M", identical: true, sameEnd: true},
	}
}

// ccMakeBacking puts base.qcow2 (8 MiB, some data) and base.raw (5000 bytes) into dir.
func ccMakeBacking(t testing.TB, dir string) {
	t.Helper()
	ccNewImage(t, dir, "base.qcow2", "", "8M", "write -P 7 0 1M")
	if err := os.WriteFile(filepath.Join(dir, "base.raw"), bytes.Repeat([]byte{9}, 5000), 0o644); err != nil {
		t.Fatal(err)
	}
}

// ccQemuIn runs qemu-img in dir (so that relative data file names resolve as for our Create).
func ccQemuIn(t testing.TB, dir string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command("qemu-img", args...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("qemu-img %v: %v\n%s", args, err, errb.String())
	}
	return out.String()
}

// ccInfo is qemu-img info --output=json without the fields that name paths or measure disk use.
func ccInfo(t testing.TB, dir, p string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(ccQemuIn(t, dir, "info", "--output=json", p)), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"filename", "actual-size", "children", "full-backing-filename"} {
		delete(m, k)
	}
	return m
}

// ccMapExtent is one extent of qemu-img map --output=json, without the host offset.
type ccMapExtent struct {
	Start, Length       uint64
	Depth               int
	Present, Zero, Data bool
}

// ccMap returns qemu-img map's view of the image, adjacent extents of the same kind merged
// (qemu-img merges only when host offsets are contiguous too, which depends on the layout).
// Without withZero the zero flag is dropped: for preallocated clusters it comes from the host
// file's holes, at file system block granularity, and so depends on the layout too.
func ccMap(t testing.TB, dir, p string, withZero bool) []ccMapExtent {
	t.Helper()
	var raw []ccMapExtent
	if err := json.Unmarshal([]byte(ccQemuIn(t, dir, "map", "--output=json", p)), &raw); err != nil {
		t.Fatal(err)
	}
	var out []ccMapExtent
	for _, e := range raw {
		if !withZero {
			e.Zero = false
		}
		if n := len(out); n > 0 {
			l := &out[n-1]
			if l.Start+l.Length == e.Start && l.Depth == e.Depth && l.Present == e.Present && l.Zero == e.Zero && l.Data == e.Data {
				l.Length += e.Length
				continue
			}
		}
		out = append(out, e)
	}
	return out
}

// TestCreateMatchesQemuImg creates each case with Create and with qemu-img create and requires
// qemu-img check exit 0 on ours, the same qemu-img info and map, the same image end offset
// where the layouts agree, and byte-identical files where qemu-img lays the image out as we do.
func TestCreateMatchesQemuImg(t *testing.T) {
	t.Parallel()
	for _, tc := range ccCreateCases() {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ours, theirs := t.TempDir(), t.TempDir()
			if tc.backing {
				ccMakeBacking(t, ours)
				ccMakeBacking(t, theirs)
			}
			op := filepath.Join(ours, "t.qcow2")
			if err := Create(op, tc.o); err != nil {
				t.Fatalf("Create: %v", err)
			}
			args := []string{"create", "-q", "-f", "qcow2"}
			if tc.qemu != "" {
				args = append(args, "-o", tc.qemu)
			}
			args = append(args, "t.qcow2")
			if tc.size != "" {
				args = append(args, tc.size)
			}
			ccQemuIn(t, theirs, args...)
			tp := filepath.Join(theirs, "t.qcow2")

			q := corpus.QemuCheck(t, op, corpus.CheckOptions{})
			if q.ExitCode != 0 {
				t.Fatalf("qemu-img check on our image: exit %d\n%s", q.ExitCode, q.Stderr)
			}
			qt := corpus.QemuCheck(t, tp, corpus.CheckOptions{})
			if q.AllocatedClusters != qt.AllocatedClusters || q.TotalClusters != qt.TotalClusters {
				t.Errorf("allocated/total clusters: ours %d/%d, qemu-img's %d/%d", q.AllocatedClusters, q.TotalClusters, qt.AllocatedClusters, qt.TotalClusters)
			}
			if tc.sameEnd && q.ImageEndOffset != qt.ImageEndOffset {
				t.Errorf("image-end-offset: ours %d, qemu-img's %d", q.ImageEndOffset, qt.ImageEndOffset)
			}
			if a, b := ccInfo(t, ours, "t.qcow2"), ccInfo(t, theirs, "t.qcow2"); !reflect.DeepEqual(a, b) {
				t.Errorf("qemu-img info differs:\nours:   %v\ntheirs: %v", a, b)
			}
			if a, b := ccMap(t, ours, "t.qcow2", tc.identical), ccMap(t, theirs, "t.qcow2", tc.identical); !reflect.DeepEqual(a, b) {
				t.Errorf("qemu-img map differs:\nours:   %+v\ntheirs: %+v", a, b)
			}
			if tc.identical {
				ccSameFile(t, op, tp)
			} else {
				a := ccOpenImg(t, op).read(0, 4096)
				b := ccOpenImg(t, tp).read(0, 4096)
				// Header fields before the table offsets agree even where the layout differs.
				if !bytes.Equal(a[:offL1TableOffset], b[:offL1TableOffset]) {
					t.Errorf("headers differ:\nours   %x\ntheirs %x", a[:offL1TableOffset], b[:offL1TableOffset])
				}
			}
			if tc.o.DataFile != "" {
				ccSameFile(t, filepath.Join(ours, tc.o.DataFile), filepath.Join(theirs, tc.o.DataFile))
			}
			res, err := Check(op, RepairNone)
			if err != nil || !res.Clean() {
				t.Errorf("our Check of our image: %v %+v", err, res)
			}
		})
	}
}

// ccSameFile requires two files to have the same length and contents.
func ccSameFile(t testing.TB, a, b string) {
	t.Helper()
	out, err := exec.Command("cmp", a, b).CombinedOutput()
	if err != nil {
		t.Errorf("%s and %s differ: %v %s", a, b, err, out)
	}
}

// TestCreatedImagesAreUsable writes through qemu-io into images we created, then checks them
// and reads the data back.
func TestCreatedImagesAreUsable(t *testing.T) {
	t.Parallel()
	for _, tc := range ccCreateCases() {
		if tc.size == "0" || tc.o.Size == 1000 {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			if tc.backing {
				ccMakeBacking(t, dir)
			}
			p := filepath.Join(dir, "t.qcow2")
			if err := Create(p, tc.o); err != nil {
				t.Fatal(err)
			}
			size := ccOpenImg(t, p).h.Size
			n := min(size/4, 12<<10)
			w1 := fmt.Sprintf("%d %d", n/4, n)    // near the start, unaligned
			w2 := fmt.Sprintf("%d %d", size-n, n) // the very end
			var out, errb bytes.Buffer
			cmd := exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a "+w1, "-c", "write -P 0x5b "+w2, "-c", "read -P 0x5a "+w1, "-c", "read -P 0x5b "+w2, p)
			cmd.Dir, cmd.Stdout, cmd.Stderr = dir, &out, &errb
			if err := cmd.Run(); err != nil || strings.Contains(out.String(), "Pattern verification failed") {
				t.Fatalf("qemu-io: %v\n%s%s", err, out.String(), errb.String())
			}
			if q := corpus.QemuCheck(t, p, corpus.CheckOptions{}); q.ExitCode != 0 {
				t.Fatalf("qemu-img check after writes: exit %d\n%s", q.ExitCode, q.Stderr)
			}
			if res, err := Check(p, RepairNone); err != nil || !res.Clean() {
				t.Fatalf("Check after writes: %v %+v", err, res)
			}
		})
	}
}

// TestCreateRefuses checks that bad options are refused with an error naming the problem, and
// that nothing is left behind.
func TestCreateRefuses(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ccMakeBacking(t, dir)
	cases := []struct {
		name string
		o    CreateOptions
		want string
	}{
		{"l1-limit-512", CreateOptions{Size: 129 << 30, ClusterSize: 512}, "32 MiB"},
		{"l1-limit-64k", CreateOptions{Size: 300 << 50}, "32 MiB"},
		{"too-big", CreateOptions{Size: 1 << 63}, "size"},
		{"cluster-not-pow2", CreateOptions{Size: 1 << 20, ClusterSize: 3000}, "cluster_size"},
		{"cluster-too-small", CreateOptions{Size: 1 << 20, ClusterSize: 256}, "cluster_size"},
		{"cluster-too-big", CreateOptions{Size: 1 << 20, ClusterSize: 4 << 20}, "cluster_size"},
		{"refbits", CreateOptions{Size: 1 << 20, RefcountBits: 128}, "refcount_bits"},
		{"refbits-3", CreateOptions{Size: 1 << 20, RefcountBits: 3}, "refcount_bits"},
		{"compat", CreateOptions{Size: 1 << 20, Compat: "2.0"}, "compat"},
		{"v2-lazy", CreateOptions{Size: 1 << 20, Compat: "0.10", LazyRefcounts: true}, "lazy_refcounts"},
		{"v2-refbits", CreateOptions{Size: 1 << 20, Compat: "0.10", RefcountBits: 8}, "refcount_bits"},
		{"v2-extl2", CreateOptions{Size: 1 << 20, Compat: "0.10", ExtendedL2: true}, "extended_l2"},
		{"v2-zstd", CreateOptions{Size: 1 << 20, Compat: "0.10", CompressionType: CompressionZstd}, "compression_type"},
		{"extl2-small-cluster", CreateOptions{Size: 1 << 20, ExtendedL2: true, ClusterSize: 4096}, "extended_l2"},
		{"compression", CreateOptions{Size: 1 << 20, CompressionType: 7}, "compression_type"},
		{"raw-without-datafile", CreateOptions{Size: 1 << 20, DataFileRaw: true}, "data_file_raw"},
		{"prealloc-mode", CreateOptions{Size: 1 << 20, Preallocation: "sparse"}, "preallocation"},
		{"backing-prealloc", CreateOptions{Size: 1 << 20, Preallocation: "metadata", BackingFile: "base.qcow2", BackingFormat: "qcow2"}, "extended_l2"},
		{"backing-missing", CreateOptions{Size: 1 << 20, BackingFile: "nope.qcow2", BackingFormat: "qcow2"}, "nope.qcow2"},
		{"backing-missing-no-size", CreateOptions{BackingFile: "nope.qcow2", BackingFormat: "qcow2"}, "nope.qcow2"},
		{"backing-no-format", CreateOptions{BackingFile: "base.qcow2"}, "detected format: qcow2"},
		{"backing-json", CreateOptions{Size: 1 << 20, BackingFile: `json:{"file":"x"}`, BackingFormat: "qcow2"}, "json:"},
		{"backing-protocol", CreateOptions{Size: 1 << 20, BackingFile: "nbd://127.0.0.1/x", BackingFormat: "raw"}, "protocol"},
		{"datafile-protocol", CreateOptions{Size: 1 << 20, DataFile: "nbd://127.0.0.1/x"}, "protocol"},
		{"backing-and-datafile", CreateOptions{Size: 1 << 20, BackingFile: "base.qcow2", BackingFormat: "qcow2", DataFile: "d"}, "data file"},
		{"backing-name-too-long", CreateOptions{Size: 1 << 20, BackingFile: strings.Repeat("a", 1024), BackingFormat: "raw"}, "1023"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name+".qcow2")
			err := Create(p, tc.o)
			if err == nil {
				t.Fatalf("Create accepted %+v", tc.o)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if _, serr := os.Stat(p); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("%s left behind", p)
			}
		})
	}
}

// TestCreateLargeQuickly creates multi-TiB and 512-byte-cluster images and requires them to be
// valid and to cost no more disk than qemu-img's of the same options: the work of Create is
// its metadata, not the virtual size. (The cost is measured in allocated bytes rather than in
// seconds, which a loaded machine stretches.)
func TestCreateLargeQuickly(t *testing.T) {
	t.Parallel()
	cases := []CreateOptions{
		{Size: 4 << 40},
		{Size: 256 << 40},
		{Size: 1 << 60, ClusterSize: 2 << 20},
		{Size: 128 << 30, ClusterSize: 512},
		{Size: 32 << 30, ClusterSize: 512, RefcountBits: 64},
	}
	for _, o := range cases {
		t.Run(fmt.Sprintf("%d-c%d-r%d", o.Size, o.ClusterSize, o.RefcountBits), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p, q := filepath.Join(dir, "t.qcow2"), filepath.Join(dir, "q.qcow2")
			if err := Create(p, o); err != nil {
				t.Fatal(err)
			}
			opts := "cluster_size=" + strconv.Itoa(int(cmp.Or(o.ClusterSize, 64<<10))) +
				",refcount_bits=" + strconv.Itoa(int(cmp.Or(o.RefcountBits, 16)))
			if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts,
				q, strconv.FormatUint(o.Size, 10)).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img create: %v\n%s", err, out)
			}
			if ours, theirs := diskUse(t, p), diskUse(t, q); ours > theirs+theirs/10+1<<20 {
				t.Errorf("Create allocated %d bytes on disk, qemu-img %d", ours, theirs)
			}
			if q := corpus.QemuCheck(t, p, corpus.CheckOptions{}); q.ExitCode != 0 {
				t.Fatalf("qemu-img check: exit %d\n%s", q.ExitCode, q.Stderr)
			}
			info := ccInfo(t, filepath.Dir(p), p)
			if vs, _ := info["virtual-size"].(float64); uint64(vs) != o.Size {
				t.Errorf("virtual-size %v, want %d", info["virtual-size"], o.Size)
			}
		})
	}
}

// diskUse is the disk space the file at p takes (its allocated blocks, not its length).
func diskUse(t *testing.T, p string) int64 {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, err := NewFileStorage(f).AllocatedBytes()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
