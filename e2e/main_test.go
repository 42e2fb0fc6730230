// TestMain: build bin/qnbd and bin/qnbd-img from the current tree once per test run.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
)

// Paths of the binaries under test, set by TestMain.
var (
	qnbdBin    string
	qnbdImgBin string
	// binRace reports whether the binaries were built with the race detector.
	binRace bool
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	flag.Parse()
	// The tests mostly wait for subprocesses (servers, qemu tools), so run more of them at
	// once than there are CPUs, unless -parallel was given.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", strconv.Itoa(max(8, 4*runtime.GOMAXPROCS(0))))
	}
	dir, err := os.MkdirTemp("", "qnbd-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binRace = raceEnabled && os.Getenv("QNBD_E2E_RACE") != "0"
	qnbdBin = filepath.Join(dir, "qnbd")
	qnbdImgBin = filepath.Join(dir, "qnbd-img")
	for bin, pkg := range map[string]string{
		qnbdBin:    "github.com/qnbd/qnbd/cmd/qnbd",
		qnbdImgBin: "github.com/qnbd/qnbd/cmd/qnbd-img",
	} {
		args := []string{"build", "-o", bin}
		if binRace {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, pkg)...).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build %s: %v\n%s", pkg, err, out)
			return 1
		}
	}
	if alt := os.Getenv("QNBD_E2E_SERVER"); alt != "" {
		// Validate the suite against another server (qemu-nbd): tests of qnbd's own flags
		// fail, every other test should pass.
		qnbdBin = alt
	}
	return m.Run()
}
