// qnbd-img measure against qemu-img measure: the figures for sizes, for the corpus images and
// for small chains, and every usage and option error.
package main

import (
	"strings"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

func TestMeasureMatchesQemu(t *testing.T) {
	t.Parallel()
	dir := chainTemplate(t)
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "bm.qcow2", "8M")
	sh(t, dir, "qemu-img", "bitmap", "--add", "bm.qcow2", "b0")
	sh(t, dir, "qemu-img", "bitmap", "--add", "-g", "128k", "bm.qcow2", "a-longer-bitmap-name")
	for _, a := range []string{
		"--size 1G",
		"--size 1000",
		"-O qcow2 --size 1G",
		"-O qcow2 --size 1000",
		"--output=json -O qcow2 --size 1G",
		"-O qcow2 -o cluster_size=512,refcount_bits=64 --size 3G",
		"-O qcow2 -o extended_l2=on --size 1G",
		"-O qcow2 -o preallocation=falloc --size 100M",
		"-O qcow2 base.qcow2",
		"-O qcow2 longer.qcow2",
		"-O qcow2 -o cluster_size=4k,refcount_bits=1 longer.qcow2",
		"-O qcow2 -o backing_file=x longer.qcow2",
		"-O qcow2 -o preallocation=full top.qcow2",
		"-O qcow2 -o compat=0.10 bm.qcow2",
		"--output=json -O qcow2 bm.qcow2",
		"-O qcow2 -f raw base.raw",
		"-O qcow2 v2top.qcow2",
		"-O qcow2 -o size=5M base.qcow2",
		"base.qcow2",
		"-O raw base.raw",
		"--size 1G base.qcow2",
		"",
		"-f qcow2",
		"a b",
		"-O bogus --size 1",
		"-O vmdk --size 1M",
		"-O qcow2 -o bogus=1 --size 1M",
		"-O qcow2 -o a=b, --size 1M",
		"--size 1x",
		"--size -5",
		"-O qcow2 --size 9E",
		"--output=xml --size 1",
		"-O qcow2 -o cluster_size=3k --size 1M",
		"-O qcow2 -o compat=0.9 --size 1M",
		"-O qcow2 -o compat=0.10,refcount_bits=8 --size 1M",
		"-O qcow2 -o refcount_bits=3 --size 1M",
		"-O qcow2 -o preallocation=bad --size 1M",
		"-O qcow2 -o extended_l2=on,cluster_size=4k --size 1M",
		"-O qcow2 -o cluster_size=512 --size 4P",
		"-O qcow2 nope",
		"-o size=5M",
	} {
		// measure only reads: the cases share the images and run in parallel.
		t.Run(a, func(t *testing.T) {
			t.Parallel()
			same(t, dir, append([]string{"measure"}, strings.Fields(a)...)...)
		})
	}
}

// TestMeasureCorpusMatchesQemu: for every shared corpus image (every cluster size, refcount
// width, compression, external data file, snapshot and preallocation mode), the qcow2
// figures are qemu-img's (raw's are the virtual size, checked above).
func TestMeasureCorpusMatchesQemu(t *testing.T) {
	t.Parallel()
	imgs := corpus.Shared(t)
	for _, img := range imgs {
		t.Run(img.Name, func(t *testing.T) {
			t.Parallel()
			same(t, t.TempDir(), "measure", "-U", "--output=json", "-O", "qcow2", img.Path)
		})
	}
}
