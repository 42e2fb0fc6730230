// Tests of the version choice.
package buildinfo

import "testing"

func TestVersionPrefersTheLinkedString(t *testing.T) {
	if got := Version("v1.2.3"); got != "v1.2.3" {
		t.Fatalf("Version(linked) = %q", got)
	}
	// A test binary has build information whose main module version is "" or "(devel)".
	if got := Version(""); got != "(devel)" {
		t.Fatalf("Version(\"\") = %q, want (devel) in a test binary", got)
	}
}
