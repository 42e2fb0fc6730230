// Package raceenv gives tests the environment for child processes that may be built with the
// race detector (the e2e servers, qnbd-img re-executed from its test binary).
//
// A race-enabled program sleeps one second before it exits (the detector's atexit_sleep_ms),
// so a test that runs such a child a hundred times waits a hundred seconds for nothing.
// Environ keeps the test's own environment and any GORACE options already set (such as the
// Makefile's clear_shadow_mmap_threshold) and turns that sleep off.
//
//	cmd.Env = append(raceenv.Environ(), "LC_ALL=C")
package raceenv
