//go:build race

// Crash and fault tests under the race detector: smaller default samples (it slows the pure-Go
// checking of every state several times over).
package qcow2

const crashRaceBuild = true
