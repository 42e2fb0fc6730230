// Round trips through qnbd-img convert, judged by qemu-img (check, compare, map) and by the
// bytes qemu-img convert produces from the same source.
package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// sameFiles reports whether files a and b in dir hold the same bytes. It compares them a
// chunk at a time: under -race, reading two multi-MiB files into fresh buffers cost most of
// this package's test time in page faults on the race detector's shadow memory.
func sameFiles(t *testing.T, dir, a, b string) bool {
	t.Helper()
	fa, err := os.Open(filepath.Join(dir, a))
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.Open(filepath.Join(dir, b))
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	ba, bb := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		na, erra := io.ReadFull(fa, ba)
		nb, errb := io.ReadFull(fb, bb)
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			return false
		}
		if erra != nil || errb != nil {
			endA := erra == io.EOF || erra == io.ErrUnexpectedEOF
			endB := errb == io.EOF || errb == io.ErrUnexpectedEOF
			if !endA || !endB {
				t.Fatalf("compare %s with %s: %v, %v", a, b, erra, errb)
			}
			return true
		}
	}
}

func readFile(t *testing.T, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// allocated is the space a file occupies, in bytes.
func allocated(t *testing.T, dir, name string) int64 {
	t.Helper()
	st, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return st.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestConvertToRawMatchesQemu(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	imgs := qcow2Images(t, dir)
	rawImages(t, dir)
	imgs = append(imgs, "data.raw", "odd.raw", "sparse.raw")
	for _, img := range imgs {
		if img == "datafile.qcow2" {
			continue // its data file name is resolved differently by QEMU (cwd) and qnbd (image dir)
		}
		t.Run(img, func(t *testing.T) {
			t.Parallel()
			convertToRawMatchesQemu(t, dir, img)
		})
	}
}

// convertToRawMatchesQemu converts img (in dir) to raw with both tools, into a directory of
// the test's, and compares the bytes and the space used.
func convertToRawMatchesQemu(t *testing.T, dir, img string) {
	out := t.TempDir()
	q, o := filepath.Join(out, "q.raw"), filepath.Join(out, "o.raw")
	variants := [][]string{{}}
	if st, err := os.Stat(filepath.Join(dir, img)); err == nil && st.Size() < 16<<20 && img != "sparse.raw" {
		// The variants on the small images only, to keep the test fast.
		variants = append(variants, []string{"-S", "0"}, []string{"-S", "64k"}, []string{"-m", "1"})
	}
	for _, extra := range variants {
		args := append(append([]string{"convert", "-O", "raw"}, extra...), img)
		if r := qemu(t, dir, append(args, q)...); r.code != 0 {
			t.Fatalf("qemu-img %q: %v", args, r)
		}
		if r := ours(t, dir, append(args, o)...); r.code != 0 || r.stdout != "" || r.stderr != "" {
			t.Fatalf("qnbd-img %q: %v", args, r)
		}
		if !sameFiles(t, out, "q.raw", "o.raw") {
			t.Errorf("%q: our raw output differs from qemu-img's", args)
		}
		// Sparseness: a zero run of the source must stay a hole (without -S 0).
		if len(extra) == 0 || extra[0] != "-S" || extra[1] != "0" {
			if q, o := allocated(t, out, "q.raw"), allocated(t, out, "o.raw"); o > q+64<<10 {
				t.Errorf("%q: our output allocates %d bytes, qemu-img's %d", args, o, q)
			}
		}
	}
}

func TestConvertToQcow2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	imgs := qcow2Images(t, dir)
	rawImages(t, dir)
	imgs = append(imgs, "data.raw", "odd.raw")
	for _, img := range imgs {
		if img == "datafile.qcow2" {
			continue
		}
		t.Run(img, func(t *testing.T) {
			t.Parallel()
			convertToQcow2(t, dir, img)
		})
	}
	// Without -W and with the default options, the layout is qemu-img convert's.
	for _, img := range []string{"top.qcow2", "data.raw", "longer.qcow2"} {
		os.Remove(filepath.Join(dir, "o.qcow2"))
		os.Remove(filepath.Join(dir, "q.qcow2"))
		qemu(t, dir, "convert", "-O", "qcow2", img, "q.qcow2")
		ours(t, dir, "convert", "-O", "qcow2", img, "o.qcow2")
		w, g := qemu(t, dir, "map", "--output=json", "q.qcow2"), qemu(t, dir, "map", "--output=json", "o.qcow2")
		if w != g {
			t.Errorf("convert %s: the layout differs from qemu-img's:\nqemu-img: %v\nqnbd-img: %v", img, w, g)
		}
	}
}

// convertToQcow2 converts img (in dir) to qcow2 with qnbd-img under several option sets,
// into a directory of the test's, and has qemu-img check the result and compare it with img.
func convertToQcow2(t *testing.T, dir, img string) {
	o := filepath.Join(t.TempDir(), "o.qcow2")
	optsList := [][]string{{}, {"-o", "compat=0.10", "-W"}}
	if st, err := os.Stat(filepath.Join(dir, img)); err == nil && st.Size() < 16<<20 {
		optsList = append(optsList,
			[]string{"-o", "cluster_size=4k,lazy_refcounts=on"},
			[]string{"-o", "extended_l2=on,refcount_bits=8", "-m", "16"},
			[]string{"-o", "preallocation=metadata"})
	}
	for _, opts := range optsList {
		os.Remove(o)
		args := append(append([]string{"convert", "-O", "qcow2"}, opts...), img, o)
		if r := ours(t, dir, args...); r.code != 0 || r.stdout != "" || r.stderr != "" {
			t.Fatalf("qnbd-img %q: %v", args, r)
		}
		if r := qemu(t, dir, "check", o); r.code != 0 {
			t.Errorf("%q: qemu-img check: %v", args, r)
		}
		if r := qemu(t, dir, "compare", img, o); r.code != 0 {
			t.Errorf("%q: qemu-img compare: %v", args, r)
		}
	}
}

func TestConvertIntoExisting(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	qcow2Images(t, dir)
	rawImages(t, dir)
	// -n into an existing raw image full of other data: zeros must be written.
	sh(t, dir, "qemu-img", "create", "-q", "-f", "raw", "target.raw", "16M")
	sh(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0xee 0 16M", "target.raw")
	if r := ours(t, dir, "convert", "-n", "-O", "raw", "top.qcow2", "target.raw"); r.code != 0 {
		t.Fatalf("convert -n: %v", r)
	}
	if r := qemu(t, dir, "compare", "-f", "qcow2", "-F", "raw", "top.qcow2", "target.raw"); r.code != 0 {
		t.Errorf("after convert -n: %v", r)
	}
	// -n into an existing qcow2 image.
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "target.qcow2", "16M")
	sh(t, dir, "qemu-io", "-c", "write -P 0xee 0 16M", "target.qcow2")
	if r := ours(t, dir, "convert", "-n", "-O", "qcow2", "data.raw", "target.qcow2"); r.code != 0 {
		t.Fatalf("convert -n: %v", r)
	}
	if r := qemu(t, dir, "compare", "data.raw", "target.qcow2"); r.code != 0 {
		t.Errorf("after convert -n into qcow2: %v", r)
	}
	if r := qemu(t, dir, "check", "target.qcow2"); r.code != 0 {
		t.Errorf("check after convert -n: %v", r)
	}
	// -n without -O into a qcow2 image: qemu-img would overwrite its metadata as raw data;
	// qnbd-img refuses and leaves the image alone.
	before := readFile(t, dir, "target.qcow2")
	r := ours(t, dir, "convert", "-n", "data.raw", "target.qcow2")
	if r.code != 1 || r.stderr == "" {
		t.Errorf("convert -n into a qcow2 image without -O: %v", r)
	}
	if !bytes.Equal(before, readFile(t, dir, "target.qcow2")) {
		t.Error("the refused convert changed the target")
	}
	// A source whose first sector holds a qcow2 header, written into a probed raw target:
	// refused unless the target format is explicit. With -O raw it is copied byte for byte.
	sh(t, dir, "qemu-img", "create", "-q", "-f", "raw", "probed.raw", "16M")
	if r := ours(t, dir, "convert", "-f", "raw", "-n", "base.qcow2", "probed.raw"); r.code != 1 {
		t.Errorf("qcow2 header into a probed raw image: %v", r)
	}
	if r := ours(t, dir, "convert", "-f", "raw", "-n", "-O", "raw", "base.qcow2", "probed.raw"); r.code != 0 {
		t.Errorf("with -O raw: %v", r)
	}
	if r := qemu(t, dir, "compare", "-f", "raw", "-F", "raw", "base.qcow2", "probed.raw"); r.code != 0 {
		t.Errorf("raw copy of a qcow2 file: %v", r)
	}
	// The guard knows every format QEMU probes for, not only qcow2: a VMDK's bytes are refused
	// too, and the target is left raw.
	sh(t, dir, "qemu-img", "create", "-q", "-f", "vmdk", "src.vmdk", "1M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "raw", "probed2.raw", "16M")
	if r := ours(t, dir, "convert", "-f", "raw", "-n", "src.vmdk", "probed2.raw"); r.code != 1 || !strings.Contains(r.stderr, "probe as vmdk") {
		t.Errorf("vmdk header into a probed raw image: %v", r)
	}
	if r := qemu(t, dir, "info", "probed2.raw"); !strings.Contains(r.stdout, "file format: raw") {
		t.Errorf("the refused convert changed the target's format: %v", r)
	}
}

func TestConvertConcatenatesAndReportsProgress(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rawImages(t, dir)
	args := []string{"convert", "-O", "raw", "data.raw", "odd.raw", "sparse.raw"}
	qemu(t, dir, append(args, "q.raw")...)
	if r := ours(t, dir, append(args, "o.raw")...); r.code != 0 {
		t.Fatalf("%v", r)
	}
	if !sameFiles(t, dir, "q.raw", "o.raw") {
		t.Error("concatenated output differs from qemu-img's")
	}
	r := ours(t, dir, "convert", "-p", "-O", "qcow2", "data.raw", "p.qcow2")
	if r.code != 0 || !bytes.HasPrefix([]byte(r.stdout), []byte("    (0.00/100%)\r")) ||
		!bytes.HasSuffix([]byte(r.stdout), []byte("    (100.00/100%)\r\n")) {
		t.Errorf("progress output: %q", r.stdout)
	}
	if r := ours(t, dir, "convert", "-p", "-q", "-O", "raw", "data.raw", "p.raw"); r.stdout != "" {
		t.Errorf("-q must silence -p: %q", r.stdout)
	}
}

// Our create, qemu-io's writes, then both tools' convert to raw: the same bytes, and an image
// qemu-img check finds clean.
func TestCreateWriteConvertRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for i, opts := range [][]string{
		{},
		{"-o", "cluster_size=4k,refcount_bits=1"},
		{"-o", "compat=0.10"},
		{"-o", "extended_l2=on,lazy_refcounts=on"},
		{"-o", "preallocation=metadata,cluster_size=512"},
	} {
		os.Remove(filepath.Join(dir, "rt.qcow2"))
		if r := ours(t, dir, append(append([]string{"create", "-q", "-f", "qcow2"}, opts...), "rt.qcow2", "8M")...); r.code != 0 {
			t.Fatalf("create %q: %v", opts, r)
		}
		sh(t, dir, "qemu-io", "-c", "write -P 0x61 0 100k", "-c", "write -P 0x62 3M 1k", "-c", "write -z 50k 10k",
			"-c", "write -P 0x63 8388096 512", "-c", "discard 3M 64k", "rt.qcow2")
		if r := qemu(t, dir, "check", "rt.qcow2"); r.code != 0 {
			t.Errorf("%d: check after writes: %v", i, r)
		}
		qemu(t, dir, "convert", "-O", "raw", "rt.qcow2", "q.raw")
		if r := ours(t, dir, "convert", "-O", "raw", "rt.qcow2", "o.raw"); r.code != 0 {
			t.Fatalf("%v", r)
		}
		if !sameFiles(t, dir, "q.raw", "o.raw") {
			t.Errorf("%d %q: raw conversions differ", i, opts)
		}
		// Offsets included: zero clusters that keep their allocation ("write -z" over data) and
		// unallocated subclusters have one.
		same(t, dir, "map", "--output=json", "rt.qcow2")
		same(t, dir, "check", "--output=json", "rt.qcow2")
	}
}
