// Scratch memory for whole-image models and expectations that costs nothing under -race.
package qcow2

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// mappedFile creates the file path of n bytes and returns it mapped read-write (MAP_SHARED),
// unmapped at the end of the test: bytes stored in the slice are the file's contents, so a
// model built in it needs no separate write before qemu-img reads it.
//
// The race detector tracks only the Go heap, so memory mapped this way costs no shadow
// memory: a multi-MiB model on the heap cost most of a test's time under -race in page
// faults on its shadow. Use it only for memory the test alone touches (models, expected
// contents), never for buffers the code under test fills, whose races must stay visible.
func mappedFile(t testing.TB, path string, n int) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(int64(n)); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		return nil
	}
	b, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

// mappedScratch returns n zero bytes of anonymous memory outside the Go heap (see
// mappedFile), unmapped at the end of the test.
func mappedScratch(t testing.TB, n int) []byte {
	t.Helper()
	if n == 0 {
		return nil
	}
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}
