// qnbd-img against qemu-img on raw images and on command-line errors: identical output.
package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/internal/buildinfo"
)

// rawImages makes a set of raw images in dir with qemu-img and qemu-io.
func rawImages(t *testing.T, dir string) {
	t.Helper()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "raw", "sparse.raw", "16M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "raw", "data.raw", "16M")
	sh(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 1M", "-c", "write -P 0 4M 1M",
		"-c", "write -P 0x22 10M 4k", "-c", "write -P 0x33 15M 1M", "data.raw")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "raw", "-o", "preallocation=falloc", "falloc.raw", "1M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "raw", "-o", "preallocation=full", "full.raw", "1M")
	write(t, dir, "odd.raw", []byte(strings.Repeat("x", 1000))) // not a whole number of sectors
	write(t, dir, "empty.raw", nil)
}

func TestOracleRaw(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rawImages(t, dir)
	for _, img := range []string{"sparse.raw", "data.raw", "falloc.raw", "full.raw", "odd.raw", "empty.raw"} {
		// The commands only read: one parallel subtest per image.
		t.Run(img, func(t *testing.T) {
			t.Parallel()
			oracleRaw(t, dir, img)
		})
	}
}

// oracleRaw runs the commands that only read the raw image img (in dir) with both tools.
func oracleRaw(t *testing.T, dir, img string) {
	for _, args := range [][]string{
		{"info", img},
		{"info", "--output=json", img},
		{"info", "-f", "raw", "--output", "json", img},
		{"info", "--backing-chain", img},
		{"map", img},
		{"map", "--output=json", img},
		{"map", "--output=json", "--start-offset=1000", "--max-length=3M", img},
		{"map", "-s", "4M", "-l", "7M", img},
		{"check", img},
		{"check", "--output=json", img},
		{"check", "-q", img},
	} {
		same(t, dir, args...)
	}
}

func TestOracleCompareRaw(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rawImages(t, dir)
	sh(t, dir, "cp", "data.raw", "copy.raw")
	sh(t, dir, "cp", "data.raw", "changed.raw")
	sh(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0x44 10M 512", "changed.raw")
	sh(t, dir, "cp", "data.raw", "tail.raw")
	sh(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 0x55 12345678 1", "tail.raw")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "raw", "bigger.raw", "20M")
	sh(t, dir, "qemu-img", "create", "-q", "-f", "raw", "bigger2.raw", "20M")
	sh(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 1 18M 4k", "bigger2.raw")
	for _, args := range [][]string{
		{"compare", "data.raw", "copy.raw"},
		{"compare", "-q", "data.raw", "copy.raw"},
		{"compare", "data.raw", "changed.raw"},
		{"compare", "changed.raw", "data.raw"},
		{"compare", "data.raw", "tail.raw"},
		{"compare", "sparse.raw", "bigger.raw"},
		{"compare", "bigger.raw", "sparse.raw"},
		{"compare", "-s", "sparse.raw", "bigger.raw"},
		{"compare", "sparse.raw", "bigger2.raw"},
		{"compare", "-s", "data.raw", "copy.raw"},
		{"compare", "-s", "sparse.raw", "falloc.raw"},
		{"compare", "-f", "raw", "-F", "raw", "data.raw", "changed.raw"},
		{"compare", "data.raw", "missing.raw"},
		{"compare", "data.raw"},
		{"compare", "-f", "foo", "data.raw", "copy.raw"},
		{"compare", "-T", "bogus", "data.raw", "copy.raw"},
	} {
		same(t, dir, args...)
	}
}

func TestOracleCommandLineErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rawImages(t, dir)
	for _, args := range [][]string{
		{},
		{"foo"},
		{"--bogus"},
		{"-T"},
		{"info"},
		{"info", "-z", "data.raw"},
		{"info", "-Uz", "data.raw"},
		{"info", "--bogus", "data.raw"},
		{"info", "--f=qcow2", "data.raw"},
		{"info", "--backing-chain=x", "data.raw"},
		{"info", "-f"},
		{"info", "data.raw", "-f"},
		{"info", "--output"},
		{"info", "--output=xml", "data.raw"},
		{"info", "data.raw", "extra"},
		{"info", "-f", "foo", "data.raw"},
		{"info", "-f", "qcow2", "data.raw"},
		{"info", "missing.raw"},
		{"info", "."},
		{"info", "--", "-x"},
		{"check"},
		{"check", "-r", "foo", "data.raw"},
		{"check", "-r"},
		{"check", "--output=yaml", "data.raw"},
		{"check", "-T", "bogus", "data.raw"},
		{"check", "missing.raw"},
		{"map"},
		{"map", "-s", "1Q", "data.raw"},
		{"map", "-s", "-1", "data.raw"},
		{"map", "-l", "99999999999999999999", "data.raw"},
		{"map", "--output=x", "data.raw"},
		{"create"},
		{"create", "x.raw", "1Q"},
		{"create", "x.raw", "1M", "extra"},
		{"create", "-f", "raw", "x.raw"},
		{"create", "-f", "foo", "x.raw", "1M"},
		{"create", "-o", "", "x.raw", "1M"},
		{"create", "-o", ",a", "x.raw", "1M"},
		{"create", "-o", "a,", "x.raw", "1M"},
		{"create", "-f", "raw", "-o", "cluster_size=4k", "x.raw", "1M"},
		{"create", "-f", "raw", "-o", "size=1M,size=2M", "x.raw", "1M"},
		{"create", "-f", "raw", "-b", "data.raw", "x.raw", "1M"},
		{"create", "-f", "raw", "-F", "raw", "x.raw", "1M"},
		{"create", "-f", "raw", "-o", "help"},
		{"create", "-f", "foo", "-o", "help"},
		{"create", "-f", "qcow2", "x.qcow2"},
		{"create", "-f", "qcow2", "-o", "foo=bar", "x.qcow2", "1M"},
		{"create", "-f", "qcow2", "-o", "lazy_refcounts=maybe", "x.qcow2", "1M"},
		{"create", "-f", "qcow2", "-o", "size=abc", "x.qcow2"},
		{"create", "-f", "qcow2", "-o", "cluster_size=64k,,x", "x.qcow2", "1M"},
		{"create", "-f", "qcow2", "-b", "missing.qcow2", "-F", "qcow2", "x.qcow2"},
		{"create", "-f", "qcow2", "-u", "-b", "missing.qcow2", "-F", "qcow2", "x.qcow2"},
		{"create", "-f", "qcow2", "-b", "x.qcow2", "-F", "qcow2", "x.qcow2", "1M"},
		{"create", "-f", "qcow2", "-o", "backing_file=", "-F", "qcow2", "x.qcow2", "1M"},
		{"create", "-f", "qcow2", "-b", "data.raw", "-F", "qcow2", "x.qcow2"},
		{"compare"},
		{"compare", "-z", "a", "b"},
		{"convert"},
		{"convert", "data.raw"},
		{"convert", "-S", "100", "data.raw", "x.raw"},
		{"convert", "-S", "32M", "data.raw", "x.raw"},
		{"convert", "-m", "0", "data.raw", "x.raw"},
		{"convert", "-m", "17", "data.raw", "x.raw"},
		{"convert", "-n", "-o", "size=1", "data.raw", "x.raw"},
		{"convert", "--target-is-zero", "data.raw", "x.raw"},
		{"convert", "-O", "foo", "data.raw", "x.raw"},
		{"convert", "-O", "raw", "-o", "help"},
		{"convert", "missing.raw", "x.raw"},
		{"convert", "-T", "bogus", "data.raw", "x.raw"},
		{"convert", "-t", "bogus", "data.raw", "x.raw"},
		{"convert", "-n", "data.raw", "odd.raw"},
		{"resize"},
		{"resize", "data.raw"},
		{"resize", "-f", "raw", "data.raw", "xx"},
		{"resize", "-f", "raw", "data.raw", "0"},
		{"resize", "-f", "raw", "data.raw", "1M"},
		{"resize", "-f", "raw", "data.raw", "--", "-1M"},
		{"resize", "-f", "raw", "--preallocation=bogus", "data.raw", "1G"},
		{"resize", "-f", "raw", "--preallocation=falloc", "--shrink", "data.raw", "1M"},
		{"resize", "-f", "qcow2", "data.raw", "1G"},
		{"resize", "-U", "data.raw", "1G"},
		{"resize", "data.raw", "a", "1G"},
	} {
		same(t, dir, args...)
		for _, f := range []string{"x.raw", "x.qcow2"} {
			os.Remove(filepath.Join(dir, f))
		}
	}
}

func TestVersionAndHelp(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, args := range [][]string{{"--version"}, {"-V"}, {"--help"}, {"-h"}, {"info", "--help"}, {"convert", "-h"}} {
		r := ours(t, dir, args...)
		if r.code != 0 || r.stderr != "" || !strings.HasPrefix(r.stdout, "qemu-img version 7.2.0 (qnbd-img ") {
			t.Errorf("%q: %v", args, r)
		}
		if strings.Contains(strings.Join(args, " "), "h") && !strings.Contains(r.stdout, "Command syntax:") {
			t.Errorf("%q prints no command syntax: %v", args, r)
		}
	}
}

func TestVersionUnderOwnName(t *testing.T) {
	t.Parallel()
	var out, errb strings.Builder
	if code := run([]string{"/usr/bin/qnbd-img", "--version"}, &out, &errb); code != 0 ||
		!strings.HasPrefix(out.String(), "qnbd-img version "+buildinfo.Version(version)+" ") {
		t.Errorf("exit %d: %q %q", code, out.String(), errb.String())
	}
}

func TestRefusedOptions(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rawImages(t, dir)
	for _, args := range [][]string{
		{"info", "--image-opts", "data.raw"},
		{"info", "--object", "secret,id=s,data=x", "data.raw"},
		{"convert", "-B", "data.raw", "-O", "qcow2", "data.raw", "x.qcow2"},
		{"convert", "-l", "snap", "data.raw", "x.raw"},
		{"convert", "--salvage", "data.raw", "x.raw"},
		{"convert", "--target-image-opts", "-n", "data.raw", "x.raw"},
	} {
		r := ours(t, dir, args...)
		if r.code != 1 || r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.Contains(r.stderr, "not supported") {
			t.Errorf("%q: want one clear error line and exit 1, got %v", args, r)
		}
		if _, err := os.Stat(filepath.Join(dir, "x.raw")); err == nil {
			t.Errorf("%q created a target anyway", args)
		}
	}
	if r := ours(t, dir, "compare", "--image-opts", "data.raw", "data.raw"); r.code != 2 {
		t.Errorf("compare --image-opts: %v (qemu-img exits 2 for compare's errors)", r)
	}
}

// qnbd-img lists only the creation options it implements: every line it prints must be one
// of qemu-img's, in qemu-img's order.
func TestOptionHelpIsSubsetOfQemu(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"create", "-f", "raw", "-o", "?", "x.raw"},
		{"create", "-f", "qcow2", "-o", "help"},
		{"create", "-f", "qcow2", "-o", "help", "x.qcow2"},
		{"convert", "-O", "qcow2", "-o", "?", "x.qcow2"},
		{"convert", "-O", "qcow2", "-o", "size=1,help", "a", "x.qcow2"},
	} {
		want, got := qemu(t, dir, args...), ours(t, dir, args...)
		if got.code != want.code || got.stderr != want.stderr {
			t.Errorf("%q: %v\nqemu-img: %v", args, got, want)
		}
		theirs := strings.Split(want.stdout, "\n")
		i := 0
		for _, line := range strings.Split(got.stdout, "\n") {
			for i < len(theirs) && theirs[i] != line {
				i++
			}
			if i == len(theirs) {
				t.Errorf("%q: line %q is not in qemu-img's output (in order):\n%s", args, line, want.stdout)
				break
			}
		}
	}
}

// One deliberate difference: QEMU ends "Detected format of raw." without a newline.
func TestBackingWithoutFormat(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rawImages(t, dir)
	args := []string{"create", "-f", "qcow2", "-b", "data.raw", "x.qcow2"}
	want, got := qemu(t, dir, args...), ours(t, dir, args...)
	want.stderr += "\n"
	if got != want {
		t.Errorf("%v\nqemu-img: %v", got, want)
	}
}
