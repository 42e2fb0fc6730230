//go:build !race

// Crash and fault tests without the race detector: the default samples.
package qcow2

const crashRaceBuild = false
