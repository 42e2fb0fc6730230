// The test harness that runs qemu-img (the oracle) and qnbd-img on the same files.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/parallel"
)

// result is what one run of either tool produced.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// TestMain makes both tools print snapshot dates in UTC; in a child started by selfExec it
// runs qnbd-img instead of the tests.
func TestMain(m *testing.M) {
	runChildIfAsked()
	time.Local = time.UTC
	// The oracle tests mostly wait for child processes (qemu-img, qemu-io, qnbd-img).
	parallel.Raise(4)
	cleanup, err := buildChild()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// qemu runs the real qemu-img in dir.
func qemu(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command("qemu-img", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("qemu-img %q: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// ours runs qnbd-img with dir as the working directory, calling itself "qemu-img" so that
// messages carry the same prefix as the oracle's. It runs in a child process (see selfExec)
// so that tests using it can run in parallel.
func ours(t *testing.T, dir string, args ...string) result {
	t.Helper()
	return selfExec(t, dir, args...)
}

// sh runs a helper command (qemu-io, truncate) in dir and fails the test if it fails.
func sh(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// same runs both tools with args in dir and requires identical stdout, stderr and status.
func same(t *testing.T, dir string, args ...string) result {
	t.Helper()
	want := qemu(t, dir, args...)
	got := ours(t, dir, args...)
	if got != want {
		t.Errorf("qnbd-img %s differs from qemu-img:\nqemu-img: %v\nqnbd-img: %v", strings.Join(args, " "), want, got)
	}
	return got
}

// onCopies runs args with the image last, qemu-img on q.qcow2 and qnbd-img on o.qcow2, each a
// fresh copy of img in dir (for commands that change the image, like check -r); ours' stdout
// names q.qcow2 so that the two compare.
func onCopies(t *testing.T, dir, img string, args ...string) (want, got result) {
	t.Helper()
	sh(t, dir, "cp", img, "q.qcow2")
	sh(t, dir, "cp", img, "o.qcow2")
	want = qemu(t, dir, append(args, "q.qcow2")...)
	got = ours(t, dir, append(args, "o.qcow2")...)
	got.stdout = strings.ReplaceAll(got.stdout, "o.qcow2", "q.qcow2")
	return want, got
}

// write writes content into a new file in dir.
func write(t *testing.T, dir, name string, content []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
