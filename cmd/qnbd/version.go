// The version string: set at link time, or taken from the build information.
package main

import "runtime/debug"

// version is qnbd's version, set with -ldflags "-X main.version=..." (deploy/container's
// Containerfile does). Empty means: the main module's version from the build information.
var version string

// qnbdVersion is the version --version prints and qnbd_build_info reports.
func qnbdVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
