// Enabled = false: release builds compile the engine's self-checks away.

//go:build !invariants && !race

package invariants

// Enabled reports whether expensive internal consistency checks are compiled in. It is true
// under the "invariants" or "race" build tags.
const Enabled = false
