// qnbd-img bitmap against qemu-img bitmap on copies of the same images: the same output and
// status, then the same bitmaps (qemu-img info --output=json), a clean qemu-img check, and the
// same dirty bits (qemu-nbd -r -B NAME read with nbdinfo --map=qemu:dirty-bitmap:NAME).
package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// bitmapImages makes, in dir: base.qcow2 (64M, an enabled b0 at the default granularity and a
// disabled b1 at 4k, both dirty), inuse.qcow2 (the same shape, its bitmaps left in-use by a
// killed writer, and one consistent c0 added afterwards), plain.qcow2 (no bitmaps),
// v2.qcow2, raw.img, src.qcow2 (64M with a dirty s at 512 bytes), small.qcow2 (32M with a
// bitmap s) and big.qcow2 (100T).
func bitmapImages(t *testing.T, dir string) {
	t.Helper()
	q := func(args ...string) { sh(t, dir, "qemu-img", args...) }
	io := func(img string, cmds ...string) { qemuIO(t, dir, img, cmds...) }
	for _, img := range []string{"base.qcow2", "inuse.qcow2"} {
		q("create", "-q", "-f", "qcow2", img, "64M")
		q("bitmap", "--add", img, "b0")
		io(img, "write -P 1 0 5k", "write -z 1M 64k")
		q("bitmap", "-g", "4k", "--add", "--disable", img, "b1")
		q("bitmap", "--enable", img, "b1")
		io(img, "write -P 2 3M 3k", "discard 8M 128k")
		q("bitmap", "--disable", img, "b1")
	}
	// A writer killed while it holds the image leaves its bitmaps in-use.
	runAllowFail(t, dir, "qemu-io", "-c", "write 0 64k", "-c", "sigraise 9", "inuse.qcow2")
	q("bitmap", "-g", "8k", "--add", "inuse.qcow2", "c0")
	io("inuse.qcow2", "write 2M 4k")
	q("create", "-q", "-f", "qcow2", "plain.qcow2", "64M")
	io("plain.qcow2", "write -P 3 0 64k")
	q("create", "-q", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "64M")
	q("create", "-q", "-f", "raw", "raw.img", "1M")
	q("create", "-q", "-f", "qcow2", "src.qcow2", "64M")
	q("bitmap", "-g", "512", "--add", "src.qcow2", "s")
	io("src.qcow2", "write 7k 1k", "write 40M 1M", "write 63M 4k")
	q("create", "-q", "-f", "qcow2", "small.qcow2", "32M")
	q("bitmap", "--add", "small.qcow2", "s")
	q("create", "-q", "-f", "qcow2", "big.qcow2", "100T")
	// convert -n targets: one holding a bitmap of a name base.qcow2 has, one another name,
	// one of another size; and an overlay of inuse.qcow2.
	q("create", "-q", "-f", "qcow2", "nb0.qcow2", "64M")
	q("bitmap", "--add", "nb0.qcow2", "b0")
	q("create", "-q", "-f", "qcow2", "nzz.qcow2", "64M")
	q("bitmap", "--add", "nzz.qcow2", "zz")
	q("create", "-q", "-f", "qcow2", "n128.qcow2", "128M")
	q("create", "-q", "-f", "qcow2", "-b", "inuse.qcow2", "-F", "qcow2", "over.qcow2")
	// stale.qcow2: base.qcow2 with the bitmaps autoclear bit cleared, as a program without
	// bitmap support leaves it; QEMU ignores (and warns about) its bitmaps.
	b, err := os.ReadFile(filepath.Join(dir, "base.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	b[95] &^= 1 // autoclear_features is bytes 88-95, big endian: bit 0 is in the last
	write(t, dir, "stale.qcow2", b)
}

// bitmapImageNames are the images bitmapImages makes.
var bitmapImageNames = []string{"base.qcow2", "inuse.qcow2", "plain.qcow2", "v2.qcow2", "raw.img", "src.qcow2",
	"small.qcow2", "big.qcow2", "nb0.qcow2", "nzz.qcow2", "n128.qcow2", "over.qcow2", "stale.qcow2"}

// TestBitmapMatchesQemu runs qnbd-img bitmap, convert --bitmaps, info and measure against
// qemu-img on one set of images (made once: making them is most of the cost).
func TestBitmapMatchesQemu(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	bitmapImages(t, dir)
	t.Run("bitmap", func(t *testing.T) { bitmapCommandCases(t, dir) })
	t.Run("convert", func(t *testing.T) { convertBitmapsCases(t, dir) })
	t.Run("info", func(t *testing.T) { bitmapInfoCases(t, dir) })
}

// bitmapCommandCases: qnbd-img bitmap.
func bitmapCommandCases(t *testing.T, dir string) {
	long := strings.Repeat("x", 1023)
	for _, a := range []string{
		// Each operation, alone and in sequences.
		"--add base.qcow2 n",
		"-g 512 --add base.qcow2 n",
		"-g 2G --add base.qcow2 n",
		"--add plain.qcow2 n",
		"--add --remove plain.qcow2 n",
		"--add --disable --enable plain.qcow2 n",
		"--remove base.qcow2 b0",
		"--remove base.qcow2 b0 --remove base.qcow2 b1",
		"--clear base.qcow2 b0",
		"--enable base.qcow2 b1",
		"--disable base.qcow2 b0",
		"--merge b0 base.qcow2 b1",
		"--merge b0 base.qcow2 b0",
		"--add --merge b0 --merge b1 base.qcow2 n",
		"--merge s -b src.qcow2 base.qcow2 b0",
		"--merge s -b src.qcow2 -F qcow2 base.qcow2 b1",
		"--add --merge s --source-file=src.qcow2 --source-format=qcow2 plain.qcow2 n",
		"--add --merge b0 --merge s -b src.qcow2 plain.qcow2 n",
		"--add --merge b0 -b base.qcow2 base.qcow2 n",
		// In-use bitmaps: removed, never used.
		"--remove inuse.qcow2 b0",
		"--clear inuse.qcow2 b0",
		"--disable inuse.qcow2 b0",
		"--merge b0 inuse.qcow2 c0",
		"--add --merge c0 inuse.qcow2 n",
		"--remove --remove inuse.qcow2 c0",
		// Ignored bitmaps (autoclear bit off): QEMU warns, and its read-write open drops them.
		"--add stale.qcow2 n",
		"--clear stale.qcow2 b0",
		// Refusals of an operation.
		"--add base.qcow2 b0",
		"--add --add plain.qcow2 n",
		"-g 1000 --add base.qcow2 n",
		"-g 4G --add base.qcow2 n",
		"--add base.qcow2 " + long,
		"--add base.qcow2 x" + long,
		"-g 512 --add big.qcow2 n",
		"-g 512 --add big.qcow2 x" + long,
		"--add v2.qcow2 n",
		"--add -f raw raw.img n",
		"-g 256 --add -f raw raw.img n",
		"--clear -f raw raw.img n",
		"--merge s -b src.qcow2 -f raw raw.img n",
		"--remove base.qcow2 nope",
		"--clear base.qcow2 nope",
		"--merge b0 base.qcow2 nope",
		"--merge nope base.qcow2 b0",
		"--disable --add base.qcow2 n",
		"--merge s -b small.qcow2 base.qcow2 b0",
		"--merge s -b src.qcow2 -F raw base.qcow2 b0",
		"--merge nope -b src.qcow2 base.qcow2 b0",
		"--merge s -b nofile base.qcow2 b0",
		"--add nofile n",
		"--add -f bogus base.qcow2 n",
		// Refusals of the command line.
		"base.qcow2 b0",
		"--add base.qcow2",
		"--add base.qcow2 b0 extra",
		"-g 64k --remove base.qcow2 b0",
		"-g abc --add base.qcow2 n",
		"-g 16E --add base.qcow2 n",
		"-F qcow2 --add base.qcow2 n",
		"-b src.qcow2 --add base.qcow2 n",
		"--bogus base.qcow2 b0",
		"--disabled --add base.qcow2 n",
		"--merge",
	} {
		t.Run(a, func(t *testing.T) {
			t.Parallel()
			bitmapMatchesQemu(t, dir, strings.Fields(a))
		})
	}
	t.Run("empty name", func(t *testing.T) {
		t.Parallel()
		bitmapMatchesQemu(t, dir, []string{"--add", "base.qcow2", ""})
	})
}

// nodeName matches QEMU's automatic node names, whose number differs from run to run.
var nodeName = regexp.MustCompile(`#block[0-9]+`)

// bitmapMatchesQemu runs bitmap with args on fresh copies of the images (q. for qemu-img, o.
// for qnbd-img) and compares the output, then every image either tool changed.
func bitmapMatchesQemu(t *testing.T, src string, args []string) {
	var used []string // only the images named are copied: the rest cannot change
	for _, img := range bitmapImageNames {
		if slices.Contains(args, img) {
			used = append(used, img)
		}
	}
	dir := isolated(t, src, used...)
	want, got := runOnCopies(t, dir, used, append([]string{"bitmap"}, args...)) // cli_amend_test.go
	want.stderr = nodeName.ReplaceAllString(want.stderr, "#block")
	got.stderr = nodeName.ReplaceAllString(got.stderr, "#block")
	if got != want {
		t.Errorf("bitmap %q:\nqemu-img: %v\nqnbd-img: %v", args, want, got)
	}
	for _, img := range used {
		if !differs(t, dir, img, "q."+img) && !differs(t, dir, img, "o."+img) {
			continue // neither tool changed it
		}
		sameBitmaps(t, dir, "q."+img, "o."+img, args[len(args)-1])
	}
}

// sameBitmaps requires image o (changed by qnbd-img) to check as q does and to hold the bitmaps of
// image q (changed by qemu-img): the same qemu-img info (names, granularities, flags) and the
// same dirty bits in the bitmap name ("": in all of them), unless it is in-use or gone (the
// other bitmaps are stored as the close stores them after any open, which the engine's tests
// cover). With dir "", q and o are absolute paths.
func sameBitmaps(t *testing.T, dir, q, o, name string) {
	t.Helper()
	// Clean, or as qemu-img's result (an image with ignored bitmaps has leaks in both).
	if r, w := qemu(t, dir, "check", o), qemu(t, dir, "check", q); r.code != w.code {
		t.Errorf("check %s: %v\nqemu-img's image: %v", o, r, w)
	}
	wi := qemu(t, dir, "info", "--output=json", q)
	gi := qemu(t, dir, "info", "--output=json", o)
	if infoBody(jsonBody(wi.stdout)) != infoBody(jsonBody(gi.stdout)) || wi.stderr != strings.ReplaceAll(gi.stderr, o, q) {
		t.Errorf("%s: info differs:\n%s\nvs\n%s", o, wi.stdout, gi.stdout)
		return
	}
	for _, b := range infoBitmaps(t, wi.stdout) {
		if (name != "" && b.Name != name) || slices.Contains(b.Flags, "in-use") {
			continue
		}
		wm, gm := dirtyMap(t, dir, q, b.Name), dirtyMap(t, dir, o, b.Name)
		if wm != gm {
			t.Errorf("%s: bitmap %s: dirty map differs:\nqemu-img:\n%s\nqnbd-img:\n%s", o, b.Name, wm, gm)
		}
	}
}

// jsonBody drops the lines of qemu-img info --output=json that name the file or measure the
// host file.
func jsonBody(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, `"filename"`) || strings.Contains(l, `"actual-size"`) {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

// infoBitmap is one bitmap of qemu-img info --output=json.
type infoBitmap struct {
	Name  string   `json:"name"`
	Flags []string `json:"flags"`
}

// infoBitmaps lists the bitmaps of a qemu-img info --output=json answer.
func infoBitmaps(t *testing.T, s string) []infoBitmap {
	t.Helper()
	var v struct {
		Specific struct {
			Data struct {
				Bitmaps []infoBitmap `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("info: %v\n%s", err, s)
	}
	return v.Specific.Data.Bitmaps
}

// dirtyMap is nbdinfo's map of the qemu:dirty-bitmap:NAME context of img served by qemu-nbd.
func dirtyMap(t *testing.T, dir, img, name string) string {
	t.Helper()
	return sh(t, dir, "nbdinfo", "--map=qemu:dirty-bitmap:"+name, "--",
		"[", "qemu-nbd", "-r", "-f", "qcow2", "-B", name, filepath.Join(dir, img), "]")
}

// runAllowFail runs a helper command in dir whose failure is expected (a process that kills
// itself) and ignores its status.
func runAllowFail(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Run() // the status is the point: killed
}
