package qcow2

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// longTests enables the heavy engine runs (bigger randomized and stress runs).
var longTests = flag.Bool("qcow2.long", false, "run the long qcow2 engine tests")

// engQemu runs a command and returns its combined output, failing the test on error.
func engQemu(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// engCreate makes an image with qemu-img: opts is the -o string ("" for defaults).
func engCreate(t testing.TB, dir, name, opts, size string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	args := []string{"create", "-q", "-f", "qcow2"}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	engQemu(t, "qemu-img", append(args, p, size)...)
	return p
}

// engQemuCheck runs qemu-img check and returns its exit code and output.
func engQemuCheck(t testing.TB, path string) (int, string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "check", path).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatalf("qemu-img check %s: %v", path, err)
	}
	return 0, string(out)
}

// engRequireClean fails unless qemu-img check finds the image consistent (exit 0).
func engRequireClean(t testing.TB, path string) {
	t.Helper()
	if code, out := engQemuCheck(t, path); code != 0 {
		t.Errorf("qemu-img check %s: exit %d\n%s", path, code, out)
	}
}

// openTestImage opens path with our engine and registers a cleanup that closes the image and
// then requires `qemu-img check` to report it consistent (exit 0): every test that writes an
// image uses it, so a test that leaves a leak or a corruption behind fails.
func openTestImage(t testing.TB, path string, o OpenOptions) *Image {
	t.Helper()
	img, err := Open(path, o)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() {
		if err := img.Close(); err != nil {
			t.Errorf("close %s: %v", path, err)
		}
		if !t.Failed() {
			engRequireClean(t, path)
		}
	})
	return img
}

// engConvertRaw returns the guest contents of an image as qemu-img sees them.
func engConvertRaw(t testing.TB, path string, extra ...string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "convert.raw")
	args := append([]string{"convert", "-O", "raw"}, extra...)
	engQemu(t, "qemu-img", append(args, path, out)...)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// engCompare runs qemu-img compare of a qcow2 image against a raw file.
func engCompare(t testing.TB, img, raw string) {
	t.Helper()
	out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, raw).CombinedOutput()
	if err != nil {
		t.Errorf("qemu-img compare %s %s: %v\n%s", img, raw, err, out)
	}
}

// engCompareShadow writes shadow (the guest contents a test expects) to a raw file and runs
// engCompare of the qcow2 image against it.
func engCompareShadow(t testing.TB, img string, shadow []byte) {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "shadow.raw")
	if err := os.WriteFile(raw, shadow, 0o644); err != nil {
		t.Fatal(err)
	}
	engCompare(t, img, raw)
}

// engReadAll reads the whole guest through our engine.
func engReadAll(t testing.TB, img *Image) []byte {
	t.Helper()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

// engFirstDiff describes where two byte slices differ.
func engFirstDiff(a, b []byte) string {
	if len(a) != len(b) {
		return "lengths differ"
	}
	for i := range a {
		if a[i] != b[i] {
			j := i
			for j < len(a) && a[j] != b[j] {
				j++
			}
			return fmt.Sprintf("first difference at %d for %d bytes", i, j-i)
		}
	}
	return ""
}

// qemuMapExtent is one entry of qemu-img map --output=json.
type qemuMapExtent struct {
	Start  uint64 `json:"start"`
	Length uint64 `json:"length"`
	Depth  int    `json:"depth"`
	Zero   bool   `json:"zero"`
	Data   bool   `json:"data"`
	Offset *int64 `json:"offset"`
}

func engQemuMap(t testing.TB, path string) []qemuMapExtent {
	t.Helper()
	out := engQemu(t, "qemu-img", "map", "--output=json", path)
	var ext []qemuMapExtent
	if err := json.Unmarshal([]byte(out), &ext); err != nil {
		t.Fatalf("parse qemu-img map: %v\n%s", err, out)
	}
	return ext
}

// byteClass is per-byte "data" or "zero" class, used to compare maps independent of how
// extents are split.
func engMapClasses(size uint64, starts, lengths []uint64, data []bool) []byte {
	c := make([]byte, size/512)
	for i := range starts {
		v := byte('z')
		if data[i] {
			v = 'd'
		}
		for s := starts[i] / 512; s < (starts[i]+lengths[i]+511)/512 && s < uint64(len(c)); s++ {
			c[s] = v
		}
	}
	return c
}
