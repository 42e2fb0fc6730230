//go:build race

// Whether this test binary runs under the race detector (-race).
package e2e

const raceEnabled = true
