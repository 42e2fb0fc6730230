// Running qnbd-img as a child process of the test binary: the test binary re-executes itself
// with childEnv set, and TestMain then runs the program instead of the tests. A child has its
// own working directory, so tests that run qnbd-img in a directory can run in parallel (an
// in-process run would need t.Chdir, which parallel tests may not use).
package main

import (
	"bytes"
	"errors"
	"flag"
	"github.com/qnbd/qnbd/internal/testing/raceenv"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"
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

// selfExec runs qnbd-img in dir as a child process named "qemu-img" (so that messages carry
// the oracle's prefix) and returns what it printed and its exit status.
func selfExec(t *testing.T, dir string, args ...string) result {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Args = append([]string{"qemu-img"}, args...)
	cmd.Dir = dir
	cmd.Env = append(raceenv.Environ(), childEnv+"=1", "LC_ALL=C", "TZ=UTC")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
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

// raiseParallel lets more tests run at once than there are CPUs, unless -parallel was given:
// the oracle tests mostly wait for child processes (qemu-img, qemu-io, qnbd-img).
func raiseParallel() {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", strconv.Itoa(max(8, 4*runtime.GOMAXPROCS(0))))
	}
}
