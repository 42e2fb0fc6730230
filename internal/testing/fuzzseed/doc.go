// Package fuzzseed keeps a committed Go fuzz seed corpus in step with the test that generates
// it, so that a generator that no longer matches its corpus fails instead of being skipped.
//
// A corpus file is testdata/fuzz/<FuzzTarget>/<name> in the `go test fuzz v1` format, holding
// one []byte argument:
//
//	go test fuzz v1
//	[]byte("\x00\x00\x00\x03IHAVEOPT...")
//
// A package's seed test builds its seeds in memory and hands them to Sync:
//
//	func TestFuzzSeeds(t *testing.T) {
//		fuzzseed.Sync(t, filepath.Join("testdata", "fuzz"), mySeeds(t))
//	}
//
// By default Sync fails the test for every seed the committed corpus lacks or holds with other
// bytes; with QNBD_WRITE_FUZZ_SEEDS=1 in the environment it writes them instead. The seeds
// must therefore come out byte for byte the same on every run: a generator normalises what its
// sources vary (timestamps, cookies) before handing the bytes over.
//
// # Concurrency
//
// Sync only reads (or, with the variable set, writes) the files it is given; tests that sync
// different targets may run in parallel, two that write the same target may not.
package fuzzseed
