// qnbd-img commit and rebase against qemu-img 7.2 on twin copies of the same chains: the same
// stdout, stderr and status, every image of the chain reading the same afterwards (qemu-img
// compare) and clean (qemu-img check).
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/qcow2"
)

// chainFiles are the files chainImages makes, which a command may change.
var chainFiles = []string{"base.qcow2", "top.qcow2", "longer.qcow2", "base.raw", "overraw.qcow2", "probed.qcow2",
	"v2base.qcow2", "v2top.qcow2"}

// chainImages makes small chains with qemu-img and qemu-io in dir: base <- top <- longer (an
// overlay larger than its backing file), a qcow2 over a raw file named with its format and
// one over a raw file it must probe, and a version 2 pair.
func chainImages(t *testing.T, dir string) {
	t.Helper()
	q := func(args ...string) { sh(t, dir, "qemu-img", args...) }
	io := func(img string, cmds ...string) { qemuIO(t, dir, img, cmds...) }
	q("create", "-q", "-f", "qcow2", "base.qcow2", "4M")
	io("base.qcow2", "write -P 0xaa 0 1M", "write -P 0xbb 2M 4k", "write -P 0xcc 3M 64k")
	q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
	io("top.qcow2", "write -P 0x11 512k 64k", "write -z 2M 64k", "discard 3M 64k", "write -P 0x12 3200k 1000")
	q("create", "-q", "-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", "longer.qcow2", "6M")
	io("longer.qcow2", "write -P 3 5M 4k", "write -P 4 0 4k")
	q("create", "-q", "-f", "raw", "base.raw", "1M")
	sh(t, dir, "qemu-io", "-f", "raw", "-c", "write -P 1 0 4k", "base.raw")
	q("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "overraw.qcow2", "2M")
	io("overraw.qcow2", "write -P 2 4k 8k", "write -P 5 1536k 64k")
	q("create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "probed.qcow2", "1M")
	dropBackingFormat(t, filepath.Join(dir, "probed.qcow2"))
	io("probed.qcow2", "write -P 6 0 64k")
	q("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2base.qcow2", "4M")
	io("v2base.qcow2", "write -P 7 0 2M")
	q("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "-b", "v2base.qcow2", "-F", "qcow2", "v2top.qcow2")
	io("v2top.qcow2", "write -P 8 1M 64k", "write -z 3M 64k")
}

// dropBackingFormat turns the backing format extension (the first one qemu-img writes after a
// version 3 header) into the end marker, so that the backing file is probed, as in images
// made before backing formats were required.
func dropBackingFormat(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(b[112:]) != 0xe2792aca {
		t.Fatalf("%s: no backing format extension at byte 112", path)
	}
	binary.BigEndian.PutUint32(b[112:], 0)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// chainTemplate makes the chains once per test; twin copies are taken from it.
func chainTemplate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	chainImages(t, dir)
	return dir
}

// twinChains copies the template's chains to dir/q (for qemu-img) and dir/o (for us).
func twinChains(t *testing.T, template string) (qdir, odir string) {
	t.Helper()
	dir := t.TempDir()
	qdir, odir = filepath.Join(dir, "q"), filepath.Join(dir, "o")
	for _, d := range []string{qdir, odir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range chainFiles {
			b, err := os.ReadFile(filepath.Join(template, f))
			if err != nil {
				t.Fatal(err)
			}
			write(t, d, f, b)
		}
	}
	return qdir, odir
}

// sameChains runs args with qemu-img in qdir and qnbd-img in odir and checks the outputs and
// every file of the chains that either tool changed (relative to template).
func sameChains(t *testing.T, template, qdir, odir string, args ...string) {
	t.Helper()
	want := qemu(t, qdir, args...)
	got := ours(t, odir, args...)
	if got != want {
		t.Errorf("qnbd-img %s differs from qemu-img:\nqemu-img: %v\nqnbd-img: %v", strings.Join(args, " "), want, got)
	}
	for _, f := range chainFiles {
		if !changed(t, template, qdir, f) && !changed(t, template, odir, f) {
			continue
		}
		fmtArg := "qcow2"
		if strings.HasSuffix(f, ".raw") {
			fmtArg = "raw"
		}
		q, o := filepath.Join(qdir, f), filepath.Join(odir, f)
		if fmtArg == "qcow2" && headerFacts(t, q) != headerFacts(t, o) {
			t.Errorf("%s: %s header differs:\n%s\nvs\n%s", strings.Join(args, " "), f, headerFacts(t, q), headerFacts(t, o))
		}
		if fmtArg == "qcow2" {
			r := qemu(t, odir, "check", "-q", f)
			if r.code != 0 && strings.Contains(r.stderr, "Could not open backing file") {
				// A chain qemu-img cannot open (a backing file named but missing) is compared
				// by its header lines only.
				continue
			}
			if r.code != 0 {
				t.Errorf("%s: qemu-img check %s: %v", strings.Join(args, " "), f, r)
			}
		}
		if r := qemu(t, qdir, "compare", "-U", "-f", fmtArg, "-F", fmtArg, q, o); r.code != 0 {
			t.Errorf("%s: %s reads differently: %v", strings.Join(args, " "), f, r)
		}
	}
}

// changed reports whether dir's copy of f differs from template's.
func changed(t *testing.T, template, dir, f string) bool {
	t.Helper()
	a, err := os.ReadFile(filepath.Join(template, f))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, f))
	if err != nil {
		t.Fatal(err)
	}
	return !bytes.Equal(a, b)
}

// headerFacts is what a chain command may change in a qcow2 header: size and backing file.
func headerFacts(t *testing.T, path string) string {
	t.Helper()
	s, err := qcow2.OpenFile(path, qcow2.FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, err := qcow2.ReadHeader(s)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return fmt.Sprintf("size %d backing %q format %q", h.Size, h.BackingFile, h.Extensions.BackingFormat)
}

// matchQemu runs each command, in parallel subtests, on fresh twin chains; the commands that
// only fail must also change nothing.
// With exact, every changed file must also be byte for byte qemu-img's.
func matchQemu(t *testing.T, exact bool, changing, failing [][]string) (template string) {
	template = chainTemplate(t)
	for _, args := range changing {
		t.Run(caseName(args[1:]), func(t *testing.T) {
			t.Parallel()
			qdir, odir := twinChains(t, template)
			sameChains(t, template, qdir, odir, args...)
			for _, f := range chainFiles {
				if exact && changed(t, qdir, odir, f) {
					t.Errorf("%s: %s is not byte for byte qemu-img's", strings.Join(args, " "), f)
				}
			}
		})
	}
	for _, args := range failing {
		t.Run("fails_"+caseName(args[1:]), func(t *testing.T) {
			t.Parallel()
			qdir, odir := twinChains(t, template)
			sameChains(t, template, qdir, odir, args...)
			if changed(t, template, odir, "top.qcow2") || changed(t, template, odir, "base.qcow2") {
				t.Fatalf("%q changed an image", args)
			}
		})
	}
	return template
}

// caseName names a subtest after its arguments, each cut to 40 bytes (one is 1100 bytes long).
func caseName(args []string) string {
	short := make([]string, len(args))
	for i, a := range args {
		short[i] = a[:min(len(a), 40)]
	}
	return strings.Join(short, "_")
}

func TestCommitMatchesQemu(t *testing.T) {
	t.Parallel()
	// Not byte for byte: QEMU empties a version 3 top by rebuilding it (smaller file).
	template := matchQemu(t, false, [][]string{
		{"commit", "-r", "0", "-t", "none", "top.qcow2"},
		{"commit", "-d", "top.qcow2"},
		{"commit", "-q", "-b", "./base.qcow2", "longer.qcow2"},
		{"commit", "overraw.qcow2"},
		{"commit", "probed.qcow2"},
		{"commit", "v2top.qcow2"},
	}, [][]string{
		{"commit", "-b", "nope", "longer.qcow2"},
		{"commit", "-b", "longer.qcow2", "longer.qcow2"},
		{"commit", "base.qcow2"},
		{"commit", "-f", "raw", "base.raw"},
		{"commit", "-r", "1x", "top.qcow2"},
		{"commit", "-t", "bad", "top.qcow2"},
		{"commit"},
		{"commit", "nope"},
	})
	t.Run("probe guard", func(t *testing.T) { t.Parallel(); commitKeepsTheBlockZeroGuard(t, template) })
	t.Run("progress", func(t *testing.T) { t.Parallel(); commitProgressEndsAtHundred(t, template) })
	t.Run("served", func(t *testing.T) { t.Parallel(); commitRefusesWhileServed(t, template) })
}

// commitKeepsTheBlockZeroGuard: data that would make a probed raw base probe
// as qcow2 is refused as QEMU refuses it (EPERM), the base keeps its first sector, and the top
// keeps its data.
func commitKeepsTheBlockZeroGuard(t *testing.T, template string) {
	qdir, odir := twinChains(t, template)
	for _, d := range []string{qdir, odir} {
		sh(t, d, "qemu-img", "create", "-q", "-f", "qcow2", "hdr.qcow2", "1M")
		sh(t, d, "dd", "if=hdr.qcow2", "of=hdr.bin", "bs=512", "count=1")
		sh(t, d, "qemu-io", "-c", "write -s hdr.bin 0 512", "probed.qcow2")
	}
	sameChains(t, template, qdir, odir, "commit", "probed.qcow2")
	b, err := os.ReadFile(filepath.Join(odir, "base.raw"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b[:4096], bytes.Repeat([]byte{1}, 4096)) {
		t.Errorf("base.raw lost its first sector")
	}
}

// commitProgressEndsAtHundred: -p prints qemu-img's progress lines, from 0.00 to 100.00,
// and the newline before the final message.
func commitProgressEndsAtHundred(t *testing.T, template string) {
	_, odir := twinChains(t, template)
	got := ours(t, odir, "commit", "-p", "top.qcow2")
	if got.code != 0 || !strings.HasPrefix(got.stdout, "    (0.00/100%)\r") ||
		!strings.HasSuffix(got.stdout, "    (100.00/100%)\r\nImage committed.\n") {
		t.Errorf("commit -p: %v", got)
	}
	if got := ours(t, odir, "commit", "-p", "-q", "top.qcow2"); got.stdout != "" {
		t.Errorf("commit -p -q printed %q", got.stdout)
	}
}

// commitRefusesWhileServed: with qemu-nbd serving the top or the base, read-write or
// read-only, commit fails with qemu-img's message and changes nothing.
func commitRefusesWhileServed(t *testing.T, template string) {
	for _, served := range [][]string{
		{"-f", "qcow2", "base.qcow2"},       // the backing file cannot be opened
		{"-r", "-f", "qcow2", "base.qcow2"}, // the base cannot be written
	} {
		t.Run(strings.Join(served, "_"), func(t *testing.T) {
			t.Parallel()
			qdir, odir := twinChains(t, template)
			holdImage(t, qdir, "qemu-nbd", served...)
			holdImage(t, odir, "qemu-nbd", served...)
			before, err := os.ReadFile(filepath.Join(odir, "top.qcow2"))
			if err != nil {
				t.Fatal(err)
			}
			want := qemu(t, qdir, "commit", "top.qcow2")
			got := ours(t, odir, "commit", "top.qcow2")
			if want.code == 0 || got != want {
				t.Errorf("commit while %q is served:\nqemu-img: %v\nqnbd-img: %v", served, want, got)
			}
			after, err := os.ReadFile(filepath.Join(odir, "top.qcow2"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Errorf("a refused commit changed top.qcow2")
			}
		})
	}
}

func TestRebaseMatchesQemu(t *testing.T) {
	t.Parallel()
	matchQemu(t, true, [][]string{
		{"rebase", "-b", "base.qcow2", "-F", "qcow2", "longer.qcow2"},
		{"rebase", "-u", "longer.qcow2"},
		{"rebase", "-b", "base.raw", "-F", "raw", "top.qcow2"},
		{"rebase", "-b", "", "probed.qcow2"},
		{"rebase", "-b", "top.qcow2", "-F", "qcow2", "v2top.qcow2"},
		{"rebase", "-p", "-b", "", "longer.qcow2"},
		// Safe mode without -F writes the differences, then refuses to change the header.
		{"rebase", "-b", "base.qcow2", "longer.qcow2"},
	}, [][]string{
		{"rebase", "-u", "-b", "base.qcow2", "longer.qcow2"},
		{"rebase", "longer.qcow2"},
		{"rebase", "-b", "base.qcow2", "-F", "qcow2"},
		{"rebase", "-b", "longer.qcow2", "-F", "qcow2", "longer.qcow2"},
		{"rebase", "-b", "top.qcow2", "-F", "qcow2", "base.qcow2"},
		{"rebase", "-b", "nope", "-F", "qcow2", "longer.qcow2"},
		{"rebase", "-b", "base.qcow2", "-F", "bogus", "longer.qcow2"},
		{"rebase", "-u", "-b", "x", "-F", "raw", "-f", "raw", "base.raw"},
		{"rebase", "-u", "-b", strings.Repeat("a", 1100), "-F", "qcow2", "top.qcow2"},
		{"rebase", "-t", "bad", "-b", "base.qcow2", "-F", "qcow2", "longer.qcow2"},
		{"rebase", "-T", "bad", "-b", "base.qcow2", "-F", "qcow2", "longer.qcow2"},
	})
}
