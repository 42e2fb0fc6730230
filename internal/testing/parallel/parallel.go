// Raise: more parallel tests than CPUs, unless -parallel was given.
package parallel

import (
	"flag"
	"runtime"
	"strconv"
)

// Raise parses the test flags and, unless -parallel was given, sets it to Default(perCPU).
func Raise(perCPU int) {
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", strconv.Itoa(Default(perCPU)))
	}
}

// Default is the -parallel that Raise sets: perCPU times GOMAXPROCS, and never below
// GOMAXPROCS (go test's own default).
func Default(perCPU int) int {
	return max(1, perCPU) * runtime.GOMAXPROCS(0)
}
