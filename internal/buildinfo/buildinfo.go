// Package buildinfo names the version a qnbd binary reports.
//
// Both commands (qnbd and qnbd-img) keep a package-main variable that the linker may set
// (go build -ldflags "-X main.version=v1.2.3", as deploy/container's Containerfile does) and
// pass it here; without one, the main module's version from the Go build information is used
// (a tagged `go install` gives it), and "(devel)" for a plain checkout build.
package buildinfo

import "runtime/debug"

// Version returns linked when the linker set it, else the main module's version from the
// build information, else "(devel)".
func Version(linked string) string {
	if linked != "" {
		return linked
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
