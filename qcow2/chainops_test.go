// Header rewrites for rebase and amend, and emptying for commit, against what qemu-img writes
// for the same change (docs/chains.md).
package qcow2

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// twinImages makes an image with qemu-img (opts, in which DIR stands for the directory, and a
// backing file when backing is set) with some data, and returns two copies of it.
func twinImages(t *testing.T, opts string, backing bool) (q, o string) {
	t.Helper()
	dir := t.TempDir()
	opts = strings.ReplaceAll(opts, "DIR", dir)
	args := []string{"create", "-q", "-f", "qcow2"}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	if backing {
		engCreate(t, dir, "base.qcow2", "", "4M")
		engQemu(t, "qemu-io", "-c", "write -P 0x33 0 4M", filepath.Join(dir, "base.qcow2"))
		args = append(args, "-b", "base.qcow2", "-F", "qcow2")
	}
	p := filepath.Join(dir, "img.qcow2")
	engQemu(t, "qemu-img", append(args, p, "4M")...)
	engQemu(t, "qemu-io", "-c", "write -P 7 64k 128k", p)
	q, o = filepath.Join(dir, "q.qcow2"), filepath.Join(dir, "o.qcow2")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{q, o} {
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return q, o
}

// requireSameFile fails unless the two files hold the same bytes.
func requireSameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Errorf("%s and %s differ: %s", a, b, engFirstDiff(x, y))
	}
}

func TestSetBackingFileWritesQemusHeader(t *testing.T) {
	for _, tc := range []struct {
		opts         string
		backing      bool
		name, format string
	}{
		{"", true, "other.raw", "raw"},
		{"", true, "", ""},
		{"", false, "some/where/base.qcow2", "qcow2"},
		{"compat=0.10", true, "v2base", "qcow2"},
		{"compat=0.10", true, "", ""},
	} {
		q, o := twinImages(t, tc.opts, tc.backing)
		args := []string{"rebase", "-u", "-b", tc.name}
		if tc.format != "" {
			args = append(args, "-F", tc.format)
		}
		engQemu(t, "qemu-img", append(args, q)...)
		// Opened without the cleanup check: the new backing file need not exist.
		img, err := Open(o, OpenOptions{NoBacking: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := img.SetBackingFile(tc.name, tc.format); err != nil {
			t.Fatal(err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		requireSameFile(t, q, o)
	}
}

func TestSetBackingFileRefusesWhatQemuRefuses(t *testing.T) {
	_, o := twinImages(t, "cluster_size=512", false)
	img := openTestImage(t, o, OpenOptions{})
	long := string(bytes.Repeat([]byte{'a'}, 1100))
	if err := img.SetBackingFile(long, "raw"); err == nil {
		t.Error("a 1100-byte backing file name was accepted")
	}
	if err := img.SetBackingFile(long[:600], "raw"); err == nil || !errors.Is(err, ErrHeaderFull) {
		t.Errorf("a name past the first cluster: %v, want ErrHeaderFull", err)
	}
}

// TestMakeEmptyShowsTheBackingFileEverywhere: after MakeEmpty the overlay reads as its
// backing file, including where it had data and zero clusters, and checks clean.
func TestMakeEmptyShowsTheBackingFileEverywhere(t *testing.T) {
	for _, opts := range []string{"", "compat=0.10"} {
		_, o := twinImages(t, opts, true)
		engQemu(t, "qemu-io", "-c", "write -z 1M 64k", "-c", "write -P 9 3M 4k", o)
		img := openTestImage(t, o, OpenOptions{})
		if err := img.MakeEmpty(); err != nil {
			t.Fatal(err)
		}
		got := engReadAll(t, img)
		if want := bytes.Repeat([]byte{0x33}, 4<<20); !bytes.Equal(got, want) {
			t.Errorf("%q: emptied overlay differs from its backing file: %s", opts, engFirstDiff(got, want))
		}
	}
}

// TestAmendWritesQemusHeaders: lazy refcounts on and off, upgrade and downgrade (of an image
// without zero clusters) leave the file byte for byte as qemu-img amend leaves it.
func TestAmendWritesQemusHeaders(t *testing.T) {
	for _, tc := range []struct {
		opts, amend string
		do          func(*Image) error
	}{
		{"", "lazy_refcounts=on", func(i *Image) error { return i.SetLazyRefcounts(true) }},
		{"lazy_refcounts=on", "lazy_refcounts=off", func(i *Image) error { return i.SetLazyRefcounts(false) }},
		{"compat=0.10", "compat=1.1", (*Image).Upgrade},
		{"", "compat=0.10", func(i *Image) error {
			if err := i.PrepareDowngrade(); err != nil {
				return err
			}
			return i.Downgrade()
		}},
	} {
		q, o := twinImages(t, tc.opts, false)
		engQemu(t, "qemu-img", "amend", "-o", tc.amend, q)
		img := openTestImage(t, o, OpenOptions{})
		if err := tc.do(img); err != nil {
			t.Fatalf("%s: %v", tc.amend, err)
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		requireSameFile(t, q, o)
	}
}

// TestDowngradeRefusesWhatQemuRefuses: QEMU's conditions, with its messages.
func TestDowngradeRefusesWhatQemuRefuses(t *testing.T) {
	for _, tc := range []struct{ opts, msg string }{
		{"refcount_bits=8", "compat=0.10 requires refcount_bits=16"},
		{"data_file=DIR/img.data", "Cannot downgrade an image with a data file"},
		{"extended_l2=on", "Cannot downgrade an image with incompatible features 0x10 set"},
	} {
		_, o := twinImages(t, tc.opts, false)
		img := openTestImage(t, o, OpenOptions{})
		err := img.PrepareDowngrade()
		if err == nil || err.Error() != tc.msg || !errors.Is(err, ErrUnsupported) {
			t.Errorf("%s: %v, want %q", tc.opts, err, tc.msg)
		}
	}
}
