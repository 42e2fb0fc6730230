// Package parallel raises a test binary's -parallel for packages whose tests mostly wait for
// child processes (qemu-img, qemu-io, qemu-nbd, the binaries under test) rather than compute.
//
// With the default -parallel (GOMAXPROCS) such a package leaves the CPUs idle while its tests
// wait, and the package that finishes last sets the wall time of make test. Call Raise from
// TestMain before m.Run:
//
//	func TestMain(m *testing.M) {
//		parallel.Raise(4) // four tests per CPU
//		os.Exit(m.Run())
//	}
//
// A -parallel given on the command line is kept.
package parallel
