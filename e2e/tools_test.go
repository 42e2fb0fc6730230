// Running the external tools (qemu-img, qemu-io, nbdinfo, nbdcopy, fio, qnbd-img) and the
// image checks every writing test ends with.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// toolTimeout bounds one tool invocation.
const toolTimeout = 3 * time.Minute

// result is a finished command.
type result struct {
	Code           int
	Stdout, Stderr string
}

// runCode runs argv and returns its exit code and output; it fails the test only when the
// command cannot run at all or times out.
func runCode(t *testing.T, argv ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("%q timed out after %v\nstdout:\n%s\nstderr:\n%s", argv, toolTimeout, r.Stdout, r.Stderr)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%q: %v", argv, err)
	}
	return r
}

// refusedLikeQemuNbd starts qnbd and qemu-nbd with the same args, which qemu-nbd must refuse
// with a message containing want, and requires qnbd's exit code and stderr (after the
// program's name) to be qemu-nbd's. The args must name a socket of the caller's own: both
// servers listen before they open the image.
func refusedLikeQemuNbd(t *testing.T, want string, args ...string) {
	t.Helper()
	got := runCode(t, append([]string{qnbdBin}, args...)...)
	q := runCode(t, append([]string{"qemu-nbd"}, args...)...)
	if q.Code == 0 || !strings.Contains(q.Stderr, want) {
		t.Fatalf("qemu-nbd %q was not refused with %q: %d %q", args, want, q.Code, q.Stderr)
	}
	if got.Code != q.Code || strings.TrimPrefix(got.Stderr, "qnbd: ") != strings.TrimPrefix(q.Stderr, "qemu-nbd: ") {
		t.Errorf("%q: qnbd exit %d %q, qemu-nbd exit %d %q", args, got.Code, got.Stderr, q.Code, q.Stderr)
	}
}

// run runs argv, fails the test unless it exits 0, and returns its standard output.
func run(t *testing.T, argv ...string) string {
	t.Helper()
	r := runCode(t, argv...)
	if r.Code != 0 {
		t.Fatalf("%q exited %d\nstdout:\n%s\nstderr:\n%s", argv, r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// requireClean requires `qemu-img check` exit 0 with no leaks, corruptions or errors on a
// qcow2 image the test wrote.
func requireClean(t *testing.T, path string) {
	t.Helper()
	r := qemuCheck(t, path, "")
	if !r.Clean() {
		t.Errorf("qemu-img check %s: exit %d, %d corruptions, %d leaks, %d check errors\n%s",
			path, r.ExitCode, r.Corruptions, r.Leaks, r.CheckErrors, r.Stderr)
	}
}

// qemuCheck runs qemu-img check on the qcow2 image at path within toolTimeout, with repair
// "" (none) or "leaks", and fails the test if the check cannot run.
func qemuCheck(t *testing.T, path, repair string) *corpus.CheckResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	r, err := corpus.Check(ctx, path, corpus.CheckOptions{Format: "qcow2", Repair: repair})
	if err != nil {
		t.Fatalf("qemu-img check %s: %v", path, err)
	}
	return r
}

// requireSame requires qemu-img compare to find a and b identical (formats "" to probe).
func requireSame(t *testing.T, a, fa, b, fb string) {
	t.Helper()
	args := []string{"qemu-img", "compare"}
	if fa != "" {
		args = append(args, "-f", fa)
	}
	if fb != "" {
		args = append(args, "-F", fb)
	}
	r := runCode(t, append(args, a, b)...)
	if r.Code != 0 {
		t.Errorf("qemu-img compare %s %s: exit %d\n%s%s", a, b, r.Code, r.Stdout, r.Stderr)
	}
}

// newRaw creates a sparse raw file of size bytes.
func newRaw(t *testing.T, dir string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return p
}

// newQcow2 creates an empty qcow2 image with qemu-img create -o opts (may be "").
func newQcow2(t *testing.T, dir string, size string, opts string) string {
	t.Helper()
	p := filepath.Join(dir, "disk.qcow2")
	args := []string{"qemu-img", "create", "-q", "-f", "qcow2"}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	run(t, append(args, p, size)...)
	return p
}

// lines splits output into non-empty lines.
func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// mkdirAll creates directory d and its parents.
func mkdirAll(d string) error { return os.MkdirAll(d, 0o755) }
