// qnbd-img amend -p -o refcount_bits=N against qemu-img on copies of the same images: widths
// up and down, refusals (a count too large for the new width, version 2, bad widths), the
// same progress bytes (three or four walks over the reftable, a refusal part way through the
// first), and images that read the same, check clean and report the same refcount width and
// bitmaps.
package main

import "testing"

// refcountImages makes, in dir, images of the shapes a width change must carry over: an
// internal snapshot (counts of 2), compressed clusters, a persistent bitmap, 512-byte
// clusters, 64-bit and 1-bit counts (4 KiB clusters: qemu-img takes half a minute to widen
// 1-bit counts of 64 KiB clusters), and a version 2 image.
func refcountImages(t *testing.T, dir string) []string {
	t.Helper()
	q := func(args ...string) { sh(t, dir, "qemu-img", args...) }
	io := func(img string, cmds ...string) { qemuIO(t, dir, img, cmds...) }
	q("create", "-q", "-f", "qcow2", "base.qcow2", "1M")
	q("create", "-q", "-f", "qcow2", "snap.qcow2", "16M")
	io("snap.qcow2", "write -P 1 0 1M", "write -P 2 5M 64k")
	q("snapshot", "-c", "s1", "snap.qcow2")
	io("snap.qcow2", "write -P 3 0 128k", "write -z 8M 64k")
	q("create", "-q", "-f", "raw", "raw.img", "4M")
	sh(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 7 0 2M", "raw.img")
	q("convert", "-c", "-O", "qcow2", "raw.img", "comp.qcow2")
	q("create", "-q", "-f", "qcow2", "bm.qcow2", "8M")
	q("bitmap", "--add", "bm.qcow2", "b0")
	io("bm.qcow2", "write -P 5 0 256k")
	q("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "c512.qcow2", "4M")
	io("c512.qcow2", "write -P 1 0 1M", "write -z 2M 4k")
	q("create", "-q", "-f", "qcow2", "-o", "refcount_bits=64", "r64.qcow2", "8M")
	io("r64.qcow2", "write -P 5 0 256k")
	q("create", "-q", "-f", "qcow2", "-o", "refcount_bits=1,cluster_size=4k", "r1.qcow2", "8M")
	io("r1.qcow2", "write -P 5 0 256k")
	q("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "8M")
	io("v2.qcow2", "write -P 1 0 64k")
	// Widened to 64 bits, QEMU's new reftable lands where no new block was allocated yet:
	// one more allocation walk, four in all (measured by its -p steps).
	q("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "walk4.qcow2", "4M")
	io("walk4.qcow2", "write -P 1 0 901k", "discard 16k 8k")
	return []string{"snap.qcow2", "comp.qcow2", "bm.qcow2", "c512.qcow2", "r64.qcow2", "r1.qcow2", "v2.qcow2", "walk4.qcow2"}
}

func TestAmendRefcountBitsMatchesQemu(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	imgs := refcountImages(t, dir)
	for _, a := range []string{
		"-o refcount_bits=64 snap.qcow2",
		"-o refcount_bits=2 snap.qcow2",
		"-o refcount_bits=8 comp.qcow2",
		"-o refcount_bits=1 bm.qcow2",
		"-o refcount_bits=1 c512.qcow2",
		"-o refcount_bits=64 c512.qcow2",
		"-o refcount_bits=1 r64.qcow2",
		"-o refcount_bits=64 r1.qcow2",
		"-o refcount_bits=16 snap.qcow2",
		"-o compat=1.1,refcount_bits=4 v2.qcow2",
		"-o refcount_bits=16,compat=0.10 r64.qcow2",
		"-o refcount_bits=8,lazy_refcounts=on r1.qcow2",
		"-o refcount_bits=64 walk4.qcow2",
		"-o refcount_bits=4 walk4.qcow2",
		// Refusals.
		"-o refcount_bits=1 snap.qcow2",
		"-o refcount_bits=1 comp.qcow2",
		"-o refcount_bits=8 v2.qcow2",
		"-o refcount_bits=8,compat=0.10 snap.qcow2",
		"-o compat=0.10 r64.qcow2",
		"-o refcount_bits=8,lazy_refcounts=on v2.qcow2",
		"-o refcount_bits=128 snap.qcow2",
		"-o refcount_bits=12 snap.qcow2",
		"-o refcount_bits=x snap.qcow2",
	} {
		t.Run(a, func(t *testing.T) {
			t.Parallel()
			amendMatchesQemu(t, dir, imgs, "-p "+a) // -p: QEMU's progress steps of every walk
		})
	}
}
