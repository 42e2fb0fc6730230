package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// engQemuCase is an image built by qemu-img and qemu-io.
type engQemuCase struct {
	name string
	opts string   // qemu-img create -o
	size string   // virtual size
	io   []string // qemu-io commands run on the image
	// backing, when set, is created first (raw or qcow2) with its own io.
	backingFmt string
	backingIO  []string
	backingSz  string
	compress   bool // rewrite with qemu-img convert -c after io
}

func engQemuCases() []engQemuCase {
	mixed := []string{"write -P 0x11 0 64k", "write -P 0x22 100k 3k", "write -z 200k 64k", "write -P 0x33 1M 200k",
		"discard 1M 64k", "write -z -u 1100k 64k", "write -P 0x44 3M 512"}
	return []engQemuCase{
		{name: "v3-64k", size: "4M", io: mixed},
		{name: "v2-4k", opts: "compat=0.10,cluster_size=4096", size: "4M", io: mixed},
		{name: "512-refbits1", opts: "cluster_size=512,refcount_bits=1", size: "4M", io: mixed},
		{name: "2M-refbits64", opts: "cluster_size=2M,refcount_bits=64", size: "8M", io: mixed},
		{name: "extl2-32k", opts: "extended_l2=on,cluster_size=32k", size: "4M", io: append(mixed, "write -P 0x55 2M 1k", "write -z 2M 1k")},
		{name: "extl2-backing", opts: "extended_l2=on,cluster_size=64k", size: "4M", io: []string{"write -P 0x66 10k 3k", "write -z 70k 2k", "discard 2M 64k"},
			backingFmt: "qcow2", backingSz: "4M", backingIO: []string{"write -P 0x77 0 4M"}},
		{name: "compressed-zlib", size: "4M", io: []string{"write -P 0x12 0 256k", "write -P 0x34 1M 64k"}, compress: true},
		{name: "compressed-zstd", opts: "compression_type=zstd", size: "4M", io: []string{"write -P 0x12 0 256k", "write -P 0x34 1M 64k"}, compress: true},
		{name: "backing-raw-shorter", size: "4M", io: []string{"write -P 0x21 64k 64k", "write -z 128k 64k"},
			backingFmt: "raw", backingSz: "1M", backingIO: []string{"write -P 0x5a 0 1M"}},
		{name: "backing-qcow2", opts: "cluster_size=4096", size: "4M", io: []string{"write -P 0x21 6k 10k", "discard 1M 4k"},
			backingFmt: "qcow2", backingSz: "4M", backingIO: []string{"write -P 0x5b 0 2M"}},
		{name: "datafile", opts: "data_file=DATA", size: "4M", io: mixed},
		{name: "datafile-raw", opts: "data_file=DATA,data_file_raw=on", size: "4M", io: mixed},
		{name: "lazy", opts: "lazy_refcounts=on", size: "4M", io: mixed},
		{name: "prealloc-metadata", opts: "preallocation=metadata,cluster_size=4096", size: "1M", io: []string{"write -P 9 8k 4k"}},
	}
}

// engBuild makes the case's image in dir and returns its path.
func engBuild(t testing.TB, dir string, c engQemuCase) string {
	t.Helper()
	opts := c.opts
	if c.backingFmt != "" {
		b := filepath.Join(dir, c.name+".base")
		engQemu(t, "qemu-img", "create", "-q", "-f", c.backingFmt, b, c.backingSz)
		for _, cmd := range c.backingIO {
			engQemu(t, "qemu-io", "-f", c.backingFmt, "-c", cmd, b)
		}
		if opts != "" {
			opts += ","
		}
		opts += "backing_file=" + b + ",backing_fmt=" + c.backingFmt
	}
	opts = replaceAll(opts, "DATA", filepath.Join(dir, c.name+".data"))
	p := engCreate(t, dir, c.name+".qcow2", opts, c.size)
	for _, cmd := range c.io {
		engQemu(t, "qemu-io", "-f", "qcow2", "-c", cmd, p)
	}
	if c.compress {
		q := p + ".c"
		args := []string{"convert", "-c", "-O", "qcow2"}
		if c.opts != "" {
			args = append(args, "-o", c.opts)
		}
		engQemu(t, "qemu-img", append(args, p, q)...)
		if err := os.Rename(q, p); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func replaceAll(s, old, nw string) string {
	return string(bytes.ReplaceAll([]byte(s), []byte(old), []byte(nw)))
}

// TestReadMatchesQemuConvert reads every qemu-made case through the engine and compares with
// qemu-img convert -O raw, byte for byte, and compares Map with qemu-img map on which bytes
// are data and which read as zeros.
func TestReadMatchesQemuConvert(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range engQemuCases() {
		t.Run(c.name, func(t *testing.T) {
			p := engBuild(t, dir, c)
			want := engConvertRaw(t, p)
			img, err := Open(p, OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			defer img.Close()
			got := engReadAll(t, img)
			if !bytes.Equal(got, want) {
				t.Fatalf("read differs from qemu-img convert: %s", engFirstDiff(got, want))
			}
			engCompareMap(t, img, p)
		})
	}
}

// engCompareMap compares our Map with qemu-img map --output=json, per 512-byte sector: both
// must agree whether the sector reads as data or as zeros (qemu's zero flag).
func engCompareMap(t *testing.T, img *Image, path string) {
	t.Helper()
	q := engQemuMap(t, path)
	ours, err := img.Map(0, img.Size())
	if err != nil {
		t.Fatal(err)
	}
	var qs, ql, os []uint64
	var qd, od []bool
	for _, e := range q {
		qs, ql, qd = append(qs, e.Start), append(ql, e.Length), append(qd, e.Data && !e.Zero)
	}
	var ol []uint64
	for _, e := range ours {
		os, ol, od = append(os, e.Start), append(ol, e.Length), append(od, e.Kind == kindData || e.Kind == kindCompressed)
	}
	a := engMapClasses(img.Size(), qs, ql, qd)
	b := engMapClasses(img.Size(), os, ol, od)
	// qemu reports "data":true,"zero":true for data clusters over holes of the host file
	// (it asks the file system): either answer is right for those sectors.
	for _, e := range q {
		if e.Data && e.Zero {
			for s := e.Start / 512; s < (e.Start+e.Length)/512 && s < uint64(len(a)); s++ {
				a[s] = b[s]
			}
		}
	}
	// Where qemu finds data, it names the layer that has it: so must we.
	for _, e := range q {
		if !e.Data || e.Zero {
			continue
		}
		for _, o := range ours {
			if o.Start < e.Start+e.Length && e.Start < o.Start+o.Length && o.Depth != e.Depth {
				t.Errorf("data at %d+%d: depth %d, qemu-img map says %d", o.Start, o.Length, o.Depth, e.Depth)
			}
		}
	}
	if !bytes.Equal(a, b) {
		t.Errorf("map differs from qemu-img map: %s\nqemu: %+v\nours: %+v", engFirstDiff(b, a), q, fmt.Sprint(ours))
	}
}
