package invariants

import "testing"

// TestEnabledMatchesRace checks the build-tag wiring: a -race build must enable the checks.
func TestEnabledMatchesRace(t *testing.T) {
	if raceEnabled && !Enabled {
		t.Fatal("built with -race but invariants.Enabled is false")
	}
}
