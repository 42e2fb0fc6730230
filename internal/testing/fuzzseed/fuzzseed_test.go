// Tests of Sync's check and write modes against a corpus in a temporary directory.
package fuzzseed

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// recordTB records failures instead of failing the test, so that Sync's verdicts can be
// checked; Fatal does not stop the goroutine (Sync returns after each).
type recordTB struct {
	testing.TB
	failures []string
}

func (r *recordTB) Helper() {}
func (r *recordTB) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}
func (r *recordTB) Fatalf(format string, args ...any) { r.Errorf(format, args...) }
func (r *recordTB) Fatal(args ...any)                 { r.failures = append(r.failures, fmt.Sprint(args...)) }

func TestEncode(t *testing.T) {
	got := string(Encode([]byte("a\x00\"\xff")))
	want := "go test fuzz v1\n[]byte(\"a\\x00\\\"\\xff\")\n"
	if got != want {
		t.Fatalf("Encode = %q, want %q", got, want)
	}
}

func TestSync(t *testing.T) {
	root := t.TempDir()
	seeds := []Seed{
		{Target: "FuzzA", Name: "one", Data: []byte{1, 2, 3}},
		{Target: "FuzzB", Name: "two", Data: []byte("hello")},
	}
	check := func(wantFail ...string) {
		t.Helper()
		r := &recordTB{TB: t}
		Sync(r, root, seeds)
		if len(wantFail) == 0 {
			if len(r.failures) != 0 {
				t.Fatalf("Sync failed: %q", r.failures)
			}
			return
		}
		if len(r.failures) != 1 {
			t.Fatalf("Sync failures = %q, want one naming %q", r.failures, wantFail)
		}
		for _, w := range wantFail {
			if !strings.Contains(r.failures[0], w) {
				t.Fatalf("Sync failure %q does not mention %q", r.failures[0], w)
			}
		}
	}

	t.Setenv(WriteEnv, "")
	check("FuzzA/one (missing)", "FuzzB/two (missing)", "run with "+WriteEnv+"=1 to regenerate")

	t.Setenv(WriteEnv, "1")
	check()
	b, err := os.ReadFile(filepath.Join(root, "FuzzB", "two"))
	if err != nil || string(b) != string(Encode([]byte("hello"))) {
		t.Fatalf("written file = %q, %v", b, err)
	}

	t.Setenv(WriteEnv, "")
	check()
	extra := filepath.Join(root, "FuzzA", "crasher")
	if err := os.WriteFile(extra, Encode([]byte("x")), 0o644); err != nil {
		t.Fatal(err)
	}
	check() // files no seed names are not the generator's business

	seeds[1].Data = []byte("hellO")
	check("FuzzB/two (differs from byte 28 of 32; the generator makes 32)")
	if _, err := os.Stat(extra); err != nil {
		t.Fatalf("the extra corpus file went: %v", err)
	}

	seeds[1] = seeds[0]
	check("two seeds named")
	seeds = nil
	check("no seeds")
}
