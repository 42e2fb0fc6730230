// TestMain: run more tests at once than there are CPUs.
package qcow2

import (
	"os"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/parallel"
)

// TestMain lets twice as many parallel tests run as there are CPUs (unless -parallel is
// given): many of them spend much of their time waiting for qemu-img, and this package,
// the longest, runs alone at the end of make test.
func TestMain(m *testing.M) {
	parallel.Raise(2)
	os.Exit(m.Run())
}
