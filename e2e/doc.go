// Package e2e holds qnbd's black-box end-to-end suite: it builds the qnbd and qnbd-img
// binaries once per test run and drives them with the clients users run against qemu-nbd
// (libnbd through the e2e/libnbd binding, qemu-io, qemu-img, nbdinfo, nbdcopy, fio,
// go-nbd, Prometheus), using QEMU's own tools and qemu-nbd as the oracles.
//
// The package has no non-test code beyond this file. Every test starts its own qnbd
// processes on Unix sockets in t.TempDir() (or on 127.0.0.1 with a free port where TCP
// matters), waits until the socket accepts a connection, and stops the server with SIGTERM,
// requiring exit status 0 and a clean `qemu-img check` on every image it wrote.
//
// # What is covered
//
//	libnbd_test.go      many requests in flight, structured reads, block status, FUA,
//	                    flush, zero/trim/cache, multi-conn (several handles, flush on
//	                    one, read on another), read-only EINVAL
//	depth_test.go       base:allocation and qemu:allocation-depth on a backing chain
//	readonly_test.go    every corpus image served with -r equals qemu's view of it
//	                    (qemu-img compare, nbdinfo --map vs qemu-nbd), snapshots with -l
//	script_test.go      qemu-io write/zero/discard/flush scripts through qnbd leave the
//	                    same bytes as the same script run by qemu-io on the image
//	nbdinfo_test.go     nbdinfo --json/--can/--list and go-nbd's client.List
//	fio_test.go         fio --ioengine=nbd random writes over several connections
//	copy_test.go        nbdcopy (raw files and corpus images out, a raw file in) and
//	                    qemu-img convert to and from qnbd, over Unix sockets and TCP
//	crash_test.go       kill -9 during writes, restart, flushed data reads back
//	prometheus_test.go  a real Prometheus scrapes --metrics-addr during a growing workload
//	hostile_*_test.go   the hostile-client catalog (docs/hostile-clients.md, 31 items) and the
//	                    NBD CVE classes listed there, from a raw-socket client, against qnbd serving
//	                    qcow2 images; after each item libnbd and nbdinfo still read the model;
//	                    RSS and descriptor bounds from /proc; SIGTERM with clients hanging on
//
// # Concurrency
//
// Tests that only read shared corpus images, or that work on their own copies in their own
// temporary directories, run in parallel (t.Parallel). Shared corpus images are never
// written: writers work on corpus.Copy copies.
//
// # Environment
//
// QNBD_E2E_RACE=0 builds no binary with the race detector, QNBD_E2E_RACE=all every one
// (see below).
// QNBD_E2E_SERVER=qemu-nbd runs the suite against another server, to check the suite's own
// expectations against the reference: the tests of qnbd-only flags (--export,
// --metrics-addr) and of go-nbd's listing (go-nbd does not set C_FIXED_NEWSTYLE, and
// qemu-nbd then refuses NBD_OPT_LIST) then fail, every other test passes.
//
// # Race detector
//
// When the test binary is built with -race, a second qnbd is built with -race too, and the
// tests that drive one server with concurrent requests or connections (libnbd's many
// requests in flight and multi-conn, fio, kill -9 during writes, the hostile-client
// catalogue) start that one (serverConfig.Race). The other servers and qnbd-img are plain
// builds: a race-built server costs about twice the CPU, and those tests make one request at
// a time. A race report makes qnbd exit with a non-zero status, which the stop check turns
// into a failure (the report itself is also looked for after kill -9). Servers run with
// raceenv.Environ (GORACE atexit_sleep_ms=0, keeping the options make test sets) so that
// each stop does not wait a second.
//
// TestMain raises -parallel (unless given) to max(8, 4*GOMAXPROCS): the tests mostly wait
// on subprocesses.
package e2e
