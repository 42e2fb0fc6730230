// TestMain: build bin/qnbd and bin/qnbd-img from the current tree once per test run.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/parallel"
)

// Paths of the binaries under test, set by TestMain.
var (
	qnbdBin    string
	qnbdImgBin string
	// qnbdRaceBin is qnbd built with the race detector, for servers started with
	// serverConfig.Race; it is qnbdBin when that is race-built too, or when the test binary
	// is not.
	qnbdRaceBin string
	// binRace reports whether qnbdBin and qnbdImgBin were built with the race detector.
	binRace bool
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	// The tests mostly wait for subprocesses (servers, qemu tools).
	parallel.Raise(4)
	dir, err := os.MkdirTemp("", "qnbd-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// A race-built server costs about twice the CPU of a plain one (113 of the suite's 293
	// CPU seconds), and most tests make one request at a time. So by default only servers
	// asked for with serverConfig.Race are race-built; QNBD_E2E_RACE=all builds every binary
	// with -race, QNBD_E2E_RACE=0 none.
	mode := os.Getenv("QNBD_E2E_RACE")
	binRace = raceEnabled && mode == "all"
	qnbdBin = filepath.Join(dir, "qnbd")
	qnbdImgBin = filepath.Join(dir, "qnbd-img")
	qnbdRaceBin = qnbdBin
	builds := map[string]string{
		qnbdBin:    "github.com/qnbd/qnbd/cmd/qnbd",
		qnbdImgBin: "github.com/qnbd/qnbd/cmd/qnbd-img",
	}
	if raceEnabled && mode != "0" && !binRace {
		qnbdRaceBin = filepath.Join(dir, "qnbd-race")
	}
	for bin, pkg := range builds {
		if err := build(bin, pkg, binRace); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if qnbdRaceBin != qnbdBin {
		if err := build(qnbdRaceBin, builds[qnbdBin], true); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if alt := os.Getenv("QNBD_E2E_SERVER"); alt != "" {
		// Validate the suite against another server (qemu-nbd): tests of qnbd's own flags
		// fail, every other test should pass.
		qnbdBin, qnbdRaceBin = alt, alt
	}
	return m.Run()
}

// raceBuilt reports whether bin is a qnbd built with the race detector.
func raceBuilt(bin string) bool {
	return bin == qnbdRaceBin && (binRace || qnbdRaceBin != qnbdBin)
}

// build runs go build for pkg into bin, with -race if race.
func build(bin, pkg string, race bool) error {
	args := []string{"build", "-o", bin}
	if race {
		args = append(args, "-race")
	}
	out, err := exec.Command("go", append(args, pkg)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("e2e: go build %s: %v\n%s", pkg, err, out)
	}
	return nil
}
