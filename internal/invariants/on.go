// Enabled = true: builds with the "invariants" or "race" tag run the engine's self-checks.

//go:build invariants || race

package invariants

// Enabled reports whether expensive internal consistency checks are compiled in. It is true
// under the "invariants" or "race" build tags.
const Enabled = true
