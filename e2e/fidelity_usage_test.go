// Command-line mistakes: qnbd installed as qemu-nbd (a link of that name) prints what
// qemu-nbd 7.2 prints, byte for byte, and exits as it does (docs/qemu-nbd-fidelity.md).
package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsageErrorsMatchQemuNBD runs both programs on the same mistaken command lines; each
// one's path is written ARGV0 in the comparison, since getopt and the --help pointer name
// the program as invoked.
func TestUsageErrorsMatchQemuNBD(t *testing.T) {
	t.Parallel()
	ref, err := exec.LookPath("qemu-nbd")
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), "qemu-nbd")
	must(t, os.Symlink(qnbdBin, link))
	for _, args := range [][]string{
		{},
		{"a", "b"},
		{"--bogus", "x"},
		{"-z", "x"},
		{"-k"},
		{"--dis", "x"},
		{"--de", "x", "y"},
		{"--cache=sometimes", "x"},
		{"--aio=x", "x"},
		{"--discard=x", "x"},
		{"-e", "x", "x"},
		{"-n", "--cache=none", "x"},
		{"--detect-zeroes=unmap", "x"},
		// getopt_long corners (internal/getopt): abbreviations qnbd's own options must not
		// make ambiguous, glibc's messages for each kind of mistake.
		{"--h=1"},
		{"--e", "x"},
		{"--lo", "s"},
		{"--f=x", "x"},
		{"--l", "x"},
		{"--=x"},
		{"-r-", "x"},
		{"-rz", "x"},
		{"-p"},
		{"--po"},
		{"--ima=1", "x"},
		{"x", "-r", "--", "-y"},
	} {
		want := runCode(t, append([]string{ref}, args...)...)
		got := runCode(t, append([]string{link}, args...)...)
		want.Stderr = strings.ReplaceAll(want.Stderr, ref, "ARGV0")
		got.Stderr = strings.ReplaceAll(got.Stderr, link, "ARGV0")
		if got != want {
			t.Errorf("%q: qnbd exit %d %q, qemu-nbd exit %d %q", args, got.Code, got.Stderr, want.Code, want.Stderr)
		}
	}
}
