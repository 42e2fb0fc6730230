// qnbd-img amend against qemu-img amend on copies of the same images: the same output and
// status (with -p), and images that read the same, check clean and report the same info.
package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// amendImages makes, in dir: a version 3 image with data and a zero cluster, a version 2 image,
// a version 3 overlay with zero clusters over base.qcow2, a lazy-refcounts image, and two
// zstd images, one with a compressed cluster.
func amendImages(t *testing.T, dir string) []string {
	t.Helper()
	q := func(args ...string) { sh(t, dir, "qemu-img", args...) }
	io := func(img string, cmds ...string) { qemuIO(t, dir, img, cmds...) }
	q("create", "-q", "-f", "qcow2", "base.qcow2", "8M")
	io("base.qcow2", "write -P 0xaa 0 8M")
	q("create", "-q", "-f", "qcow2", "v3.qcow2", "8M")
	io("v3.qcow2", "write -P 1 0 64k", "write -z 1M 64k")
	q("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "8M")
	io("v2.qcow2", "write -P 1 0 64k")
	q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "over.qcow2")
	io("over.qcow2", "write -P 1 0 64k", "write -z 1M 64k", "write -z 5M 4k")
	q("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", "lazy.qcow2", "8M")
	io("lazy.qcow2", "write -P 1 0 64k")
	// zstd compression type: dropped when no cluster is compressed, else refused after the
	// zero clusters were expanded (qemu-img 7.2 does both).
	q("create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", "zstd.qcow2", "1M")
	io("zstd.qcow2", "write -z 0 64k", "write -P 1 128k 4k")
	q("create", "-q", "-f", "qcow2", "-o", "compression_type=zstd", "zstdc.qcow2", "1M")
	io("zstdc.qcow2", "write -c -P 1 0 64k", "write -z 128k 64k")
	return []string{"v3.qcow2", "v2.qcow2", "over.qcow2", "lazy.qcow2", "zstd.qcow2", "zstdc.qcow2"}
}

func TestAmendMatchesQemu(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	imgs := amendImages(t, dir)
	for _, a := range []string{
		"-o compat=0.10 v3.qcow2",
		"-p -o compat=0.10 over.qcow2",
		"-o compat=0.10 lazy.qcow2",
		"-p -o compat=1.1 v2.qcow2",
		"-o compat=v3,lazy_refcounts=on v2.qcow2",
		"-q -o compat=1.1 v3.qcow2",
		"-p -o lazy_refcounts=on v3.qcow2",
		"-o lazy_refcounts=off lazy.qcow2",
		"-p -o compat=0.10 zstd.qcow2",
		"-p -o compat=0.10 zstdc.qcow2",
		"-o size=16M v3.qcow2",
		"-o size=1M v3.qcow2",
		"-o backing_file=base.qcow2,backing_fmt=qcow2 over.qcow2",
		// Refusals.
		"",
		"v3.qcow2",
		"-o compat=0.9 v2.qcow2",
		"-o lazy_refcounts=on v2.qcow2",
		"-o lazy_refcounts=bad v3.qcow2",
		"-o compat=0.10,lazy_refcounts=on v3.qcow2",
		"-o compat=0.10,refcount_bits=8 v3.qcow2",
		"-o refcount_bits=8 v2.qcow2",
		"-o refcount_bits=3 v3.qcow2",
		"-o cluster_size=4k v3.qcow2",
		"-o bogus=1 v3.qcow2",
		"-o , v3.qcow2",
		"-o backing_file=base.qcow2 over.qcow2",
		"-o backing_fmt=qcow2 v3.qcow2",
		"-o data_file=x v3.qcow2",
		"-o data_file_raw=on v3.qcow2",
		"-o encrypt.state=active v3.qcow2",
		"-o help v3.qcow2",
		"-f qcow2 -o help",
		"-o compat=0.10 v3.qcow2 v2.qcow2",
		"-t bad -o compat=0.10 v3.qcow2",
		"-o compat=0.10 nope",
	} {
		t.Run(a, func(t *testing.T) {
			t.Parallel()
			amendMatchesQemu(t, dir, imgs, a)
		})
	}
}

// runOnCopies copies each of imgs in dir to q.IMG and o.IMG, runs qemu-img with args on the
// q. copies and qnbd-img on the o. copies, and returns both results, with qnbd-img's stderr
// naming the q. copies so that the two compare.
func runOnCopies(t *testing.T, dir string, imgs, args []string) (want, got result) {
	t.Helper()
	for _, img := range imgs {
		b, err := os.ReadFile(filepath.Join(dir, img))
		if err != nil {
			t.Fatal(err)
		}
		write(t, dir, "q."+img, b)
		write(t, dir, "o."+img, b)
	}
	qargs, oargs := slices.Clone(args), slices.Clone(args)
	for i, s := range args {
		if slices.Contains(imgs, s) {
			qargs[i], oargs[i] = "q."+s, "o."+s
		}
	}
	want = qemu(t, dir, qargs...)
	got = ours(t, dir, oargs...)
	for _, img := range imgs {
		got.stderr = strings.ReplaceAll(got.stderr, "o."+img, "q."+img)
	}
	return want, got
}

// amendMatchesQemu runs amend with the arguments a on fresh copies (q. for qemu-img, o. for
// qnbd-img) of src's images and compares the output and the images either tool changed.
func amendMatchesQemu(t *testing.T, src string, imgs []string, a string) {
	args := append([]string{"amend"}, strings.Fields(a)...)
	dir := isolated(t, src, append(slices.Clone(imgs), "base.qcow2")...)
	want, got := runOnCopies(t, dir, imgs, args)
	if got != want {
		t.Errorf("amend %s:\nqemu-img: %v\nqnbd-img: %v", a, want, got)
	}
	for _, img := range imgs {
		if !differs(t, dir, img, "q."+img) && !differs(t, dir, img, "o."+img) {
			continue // neither tool changed it
		}
		if r := qemu(t, dir, "compare", "q."+img, "o."+img); r.code != 0 {
			t.Errorf("amend %s: %s reads differently: %v", a, img, r)
		}
		if r := qemu(t, dir, "check", "-q", "o."+img); r.code != 0 {
			t.Errorf("amend %s: check %s: %v", a, img, r)
		}
		wi := qemu(t, dir, "info", "q."+img)
		gi := qemu(t, dir, "info", "o."+img)
		if infoBody(wi.stdout) != infoBody(gi.stdout) {
			t.Errorf("amend %s: %s info differs:\n%s\nvs\n%s", a, img, wi.stdout, gi.stdout)
		}
	}
}

// differs reports whether files a and b in dir hold different bytes.
func differs(t *testing.T, dir, a, b string) bool {
	t.Helper()
	x, err := os.ReadFile(filepath.Join(dir, a))
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(filepath.Join(dir, b))
	if err != nil {
		t.Fatal(err)
	}
	return !bytes.Equal(x, y)
}

// infoBody drops the lines of qemu-img info that name the file or measure the host file.
func infoBody(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "image:") || strings.HasPrefix(l, "disk size:") {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
