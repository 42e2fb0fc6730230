package raceenv

import (
	"slices"
	"strings"
	"testing"
)

// lastGORACE is the GORACE value a child would see: the last one in env.
func lastGORACE(env []string) string {
	v := ""
	for _, kv := range env {
		if s, ok := strings.CutPrefix(kv, "GORACE="); ok {
			v = s
		}
	}
	return v
}

func TestEnvironTurnsOffExitSleep(t *testing.T) {
	t.Setenv("GORACE", "")
	if got := lastGORACE(Environ()); got != "atexit_sleep_ms=0" {
		t.Fatalf("GORACE=%q, want atexit_sleep_ms=0", got)
	}
}

func TestEnvironKeepsGivenOptions(t *testing.T) {
	t.Setenv("GORACE", "clear_shadow_mmap_threshold=1073741824 atexit_sleep_ms=5")
	got := strings.Fields(lastGORACE(Environ()))
	want := []string{"atexit_sleep_ms=0", "clear_shadow_mmap_threshold=1073741824", "atexit_sleep_ms=5"}
	if !slices.Equal(got, want) {
		t.Fatalf("GORACE fields %q, want %q (a caller's own atexit_sleep_ms, last, wins)", got, want)
	}
}

func TestEnvironKeepsTheRest(t *testing.T) {
	t.Setenv("QNBD_RACEENV_PROBE", "kept")
	if !slices.Contains(Environ(), "QNBD_RACEENV_PROBE=kept") {
		t.Fatal("the test's own environment is not passed on")
	}
}
