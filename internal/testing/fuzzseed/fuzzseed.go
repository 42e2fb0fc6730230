// The corpus file format and the check-or-write step over a generated seed set.
package fuzzseed

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// WriteEnv names the environment variable that makes Sync write the corpus instead of
// checking it.
const WriteEnv = "QNBD_WRITE_FUZZ_SEEDS"

// Seed is one corpus file: Data is the single []byte argument of the fuzz target Target,
// stored as <root>/Target/Name.
type Seed struct {
	Target string
	Name   string
	Data   []byte
}

// Encode returns the corpus file body for data in the `go test fuzz v1` format.
func Encode(data []byte) []byte {
	return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data)
}

// Sync checks seeds against the corpus under root (normally testdata/fuzz). Without WriteEnv
// set it fails t, once, naming every seed whose file is missing or holds other bytes, and
// says to run with WriteEnv=1; with WriteEnv set it writes every seed's file. Files under root
// that no seed names (crashers kept as regressions) are left alone either way. An empty seed
// set, or two seeds with one name, fail t: the generator is broken.
func Sync(t testing.TB, root string, seeds []Seed) {
	t.Helper()
	if len(seeds) == 0 {
		t.Fatal("fuzzseed: the generator made no seeds")
		return
	}
	write := os.Getenv(WriteEnv) != ""
	seen := make(map[string]bool, len(seeds))
	var stale []string
	for _, s := range seeds {
		p := filepath.Join(root, s.Target, s.Name)
		if seen[p] {
			t.Fatalf("fuzzseed: two seeds named %s", p)
			return
		}
		seen[p] = true
		want := Encode(s.Data)
		if write {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
				return
			}
			if err := os.WriteFile(p, want, 0o644); err != nil {
				t.Fatal(err)
				return
			}
			continue
		}
		got, err := os.ReadFile(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			stale = append(stale, p+" (missing)")
		case err != nil:
			t.Fatal(err)
			return
		case !bytes.Equal(got, want):
			stale = append(stale, fmt.Sprintf("%s (differs from byte %d of %d; the generator makes %d)",
				p, firstDiff(got, want), len(got), len(want)))
		}
	}
	if len(stale) > 0 {
		t.Errorf("fuzz seed corpus is stale:\n\t%s\nrun with %s=1 to regenerate",
			strings.Join(stale, "\n\t"), WriteEnv)
	}
}

// firstDiff is the index of the first byte where a and b differ (the shorter length when one
// is a prefix of the other).
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
