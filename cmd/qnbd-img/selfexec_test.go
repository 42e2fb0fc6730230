// Running qnbd-img as a child process. A child has its own working directory, so tests that
// run qnbd-img in a directory can run in parallel (an in-process run would need t.Chdir, which
// parallel tests may not use).
//
// Without -race the test binary re-executes itself with childEnv set, and TestMain then runs
// the program instead of the tests. With -race it runs a plain build of the package instead,
// made once by TestMain: a race-enabled process costs about 85 ms of CPU to start, and the
// tests start some 1500 children (120 CPU seconds of a make test). The race detector still
// covers the program's concurrent paths in-process (concurrency_test.go).
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/raceenv"
)

// childEnv, set to "1" in a child's environment, makes the test binary run qnbd-img with its
// arguments instead of the tests.
const childEnv = "QNBD_IMG_TEST_RUN_PROGRAM"

// runChildIfAsked runs the program and exits when this process is such a child.
func runChildIfAsked() {
	if os.Getenv(childEnv) != "1" {
		return
	}
	time.Local = time.UTC
	os.Exit(run(os.Args, os.Stdout, os.Stderr))
}

// childBin is the program selfExec runs: the test binary itself, or (with -race) the plain
// build that buildChild made.
var childBin string

// buildChild sets childBin. In a race build it builds the package without -race into a
// directory that the returned function removes.
func buildChild() (cleanup func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	childBin = exe
	if !raceBuild {
		return func() {}, nil
	}
	dir, err := os.MkdirTemp("", "qnbd-img-child")
	if err != nil {
		return nil, err
	}
	bin := filepath.Join(dir, "qnbd-img")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("building qnbd-img without -race: %v\n%s", err, out)
	}
	childBin = bin
	return func() { os.RemoveAll(dir) }, nil
}

// selfExec runs qnbd-img in dir as a child process named "qemu-img" (so that messages carry
// the oracle's prefix) and returns what it printed and its exit status.
func selfExec(t *testing.T, dir string, args ...string) result {
	t.Helper()
	cmd := exec.Command(childBin)
	cmd.Args = append([]string{"qemu-img"}, args...)
	cmd.Dir = dir
	cmd.Env = append(raceenv.Environ(), childEnv+"=1", "LC_ALL=C", "TZ=UTC")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("qnbd-img %q: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}
