// Test helpers: QEMU's tools as oracles (qemu-img create, convert, compare and map, qemu-io),
// run from the engine's tests. qemu-img check is internal/testing/corpus's QemuCheck and
// RequireClean, shared with every other package; ccCompareWithQemu holds our Check to it.
package qcow2

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
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

// qemuImgOutput runs qemu-img and returns its standard output, failing the test on error.
func qemuImgOutput(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatalf("qemu-img %v: %v", args, err)
	}
	return out
}

// ccRun runs a command and returns its stdout; it fails the test if the command fails.
func ccRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	var out, errb bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", name, args, err, out.String(), errb.String())
	}
	return out.String()
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

// ccCompareWithQemu fails the test unless our result agrees with qemu-img check's on every
// counter and the exit class.
func ccCompareWithQemu(t testing.TB, ours *CheckResult, q *corpus.CheckResult) {
	t.Helper()
	type row struct {
		name      string
		got, want uint64
	}
	rows := []row{
		{"exit", uint64(ours.ExitCode()), uint64(q.ExitCode)},
		{"corruptions", uint64(ours.Corruptions), uint64(q.Corruptions)},
		{"leaks", uint64(ours.Leaks), uint64(q.Leaks)},
		{"check-errors", uint64(ours.CheckErrors), uint64(q.CheckErrors)},
		{"corruptions-fixed", uint64(ours.CorruptionsFixed), uint64(q.CorruptionsFixed)},
		{"leaks-fixed", uint64(ours.LeaksFixed), uint64(q.LeaksFixed)},
		{"image-end-offset", ours.ImageEndOffset, uint64(q.ImageEndOffset)},
		{"total-clusters", ours.TotalClusters, uint64(q.TotalClusters)},
		{"allocated-clusters", ours.AllocatedClusters, uint64(q.AllocatedClusters)},
		{"fragmented-clusters", ours.FragmentedClusters, uint64(q.FragmentedClusters)},
		{"compressed-clusters", ours.CompressedClusters, uint64(q.CompressedClusters)},
	}
	for _, r := range rows {
		if r.got != r.want {
			t.Errorf("%s: ours %d, qemu-img %d\nours: %q\nqemu-img stderr:\n%s", r.name, r.got, r.want, ours.Messages, q.Stderr)
		}
	}
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

// ccSameGuest reports whether two qcow2 images hold the same guest data (qemu-img compare,
// which reads sparsely and so copes with multi-TiB virtual disks).
func ccSameGuest(t testing.TB, a, b string) bool {
	t.Helper()
	cmd := exec.Command("qemu-img", "compare", "-U", "-f", "qcow2", "-F", "qcow2", a, b)
	cmd.Dir = filepath.Dir(a)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return true
	case errors.As(err, &ee) && ee.ExitCode() == 1:
		return false
	}
	t.Fatalf("qemu-img compare %s %s: %v\n%s", a, b, err, out)
	return false
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
