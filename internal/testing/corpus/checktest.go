// qemu-img check for tests: the one set of helpers every package's tests use to ask the
// oracle whether an image is consistent.
package corpus

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// QemuCheck runs Check on path for a test, failing it (Fatal) when qemu-img could not run or
// gave no verdict; every exit code is returned in the result.
func QemuCheck(tb testing.TB, path string, opts CheckOptions) *CheckResult {
	tb.Helper()
	res, err := Check(context.Background(), path, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return res
}

// RequireClean reports a test error unless qemu-img check finds path consistent: exit 0, no
// corruptions, leaks or check errors.
func RequireClean(tb testing.TB, path string) {
	tb.Helper()
	if res := QemuCheck(tb, path, CheckOptions{}); !res.Clean() {
		tb.Errorf("qemu-img check %s: %v", path, res)
	}
}

// RequireNoCorruption reports a test error unless qemu-img check finds no corruption in path:
// exit 0, or 3 (leaks only), the verdict allowed after a crash.
func RequireNoCorruption(tb testing.TB, path string) *CheckResult {
	tb.Helper()
	res := QemuCheck(tb, path, CheckOptions{})
	if res.ExitCode != 0 && res.ExitCode != 3 {
		tb.Errorf("qemu-img check %s: %v", path, res)
	}
	return res
}

// String describes the verdict for a test failure message: exit code, counters, findings.
func (r *CheckResult) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "exit %d", r.ExitCode)
	if r.Text != "" {
		fmt.Fprintf(&b, "\n%s", strings.TrimRight(r.Text, "\n"))
		return b.String()
	}
	fmt.Fprintf(&b, ", %d corruptions, %d leaks, %d check errors", r.Corruptions, r.Leaks, r.CheckErrors)
	if s := strings.TrimRight(r.Stderr, "\n"); s != "" {
		fmt.Fprintf(&b, "\n%s", s)
	}
	return b.String()
}
