// The version string: set at link time, or taken from the build information.
package main

import "github.com/qnbd/qnbd/internal/buildinfo"

// version is qnbd's version, set with -ldflags "-X main.version=..." (deploy/container's
// Containerfile does). Empty means: the main module's version from the build information.
var version string

// qnbdVersion is the version --version prints and qnbd_build_info reports.
func qnbdVersion() string { return buildinfo.Version(version) }
