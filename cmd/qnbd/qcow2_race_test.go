//go:build race

// Whether this test binary runs under the race detector: the qcow2 tests then build qnbd
// with -race too.
package main

const raceEnabled = true
