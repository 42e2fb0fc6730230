// Environ: the test's environment, with the race detector's exit sleep off.
package raceenv

import "os"

// noExitSleep is the GORACE option that ends a race-enabled program without the one-second
// pause the detector otherwise takes at exit.
const noExitSleep = "atexit_sleep_ms=0"

// Environ returns os.Environ() with GORACE extended by noExitSleep. Options given earlier in
// GORACE stay; a later atexit_sleep_ms in the same string wins, so a value the caller set on
// purpose is not overridden.
func Environ() []string {
	opts := noExitSleep
	if cur := os.Getenv("GORACE"); cur != "" {
		opts = noExitSleep + " " + cur
	}
	return append(os.Environ(), "GORACE="+opts)
}
