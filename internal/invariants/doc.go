// Package invariants gates expensive self-checks behind a build tag, so that they cost nothing
// in release builds.
//
// Enabled is a constant: true when the binary is built with the "invariants" or "race" build
// tag (go test -race, go test -tags invariants), false otherwise. Code guards its checks with
//
//	if invariants.Enabled {
//		// verify that the cluster we are about to map has a refcount >= 1
//	}
//
// and the compiler removes the whole block from release builds. The checks are for broken
// internal invariants (bugs), never for bad input: input errors are returned in every build.
//
// The package has no state; it is safe for concurrent use.
package invariants
