package parallel

import (
	"flag"
	"runtime"
	"testing"
)

func TestDefaultIsPerCPUAndNeverBelowGoTests(t *testing.T) {
	n := runtime.GOMAXPROCS(0)
	if got := Default(4); got != 4*n {
		t.Fatalf("Default(4) = %d, want %d", got, 4*n)
	}
	if got := Default(0); got != n {
		t.Fatalf("Default(0) = %d, want go test's own default %d", got, n)
	}
}

func TestRaiseKeepsAGivenParallel(t *testing.T) {
	f := flag.Lookup("test.parallel")
	old := f.Value.String()
	defer flag.Set("test.parallel", old)
	// The test binary ran with -parallel given explicitly only if the flag was visited; set
	// it as the command line would, then Raise must leave it.
	if err := flag.Set("test.parallel", "3"); err != nil {
		t.Fatal(err)
	}
	Raise(16)
	if got := f.Value.String(); got != "3" {
		t.Fatalf("-parallel %s after Raise, want the given 3", got)
	}
}
