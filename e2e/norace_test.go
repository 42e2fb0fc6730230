//go:build !race

// Whether this test binary runs under the race detector (without -race).
package e2e

const raceEnabled = false
