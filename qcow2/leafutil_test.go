package qcow2

import (
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"testing"
)

// Test helpers shared by the leaf tests (compress, snapshots, header limits, fuzzing).

// qemuImgOutput runs qemu-img and returns its standard output, failing the test on error.
func qemuImgOutput(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("qemu-img %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatalf("qemu-img %v: %v", args, err)
	}
	return out
}

// readFull reads n bytes at off from s; bytes past the end of s read as zeros, as QEMU's file
// driver returns them.
func readFull(t testing.TB, s Storage, off HostOffset, n uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := s.ReadAt(b, int64(off)); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return b
}

// forEachL2Entry calls fn for every allocated L2 entry reachable from the L1 table at l1Off
// with l1Size entries, with the guest cluster it maps.
func forEachL2Entry(t testing.TB, s Storage, h *Header, l1Off HostOffset, l1Size uint32, fn func(guestCluster, l2Entry)) {
	t.Helper()
	g := h.Geometry()
	l1 := readFull(t, s, l1Off, uint64(l1Size)*l1EntrySize)
	for i := uint64(0); i < uint64(l1Size); i++ {
		e := l1Entry(binary.BigEndian.Uint64(l1[i*8:]))
		if e.l2Offset() == 0 {
			continue
		}
		l2 := readFull(t, s, e.l2Offset(), g.ClusterSize())
		for j := uint64(0); j < g.l2Entries(); j++ {
			le := l2Entry(binary.BigEndian.Uint64(l2[j*g.l2EntrySize():]))
			if le != 0 {
				fn(l1Index(i).firstCluster(g)+guestCluster(j), le)
			}
		}
	}
}

// openStorage opens path read-only as a Storage closed at the end of the test.
func openStorage(t testing.TB, path string) *FileStorage {
	t.Helper()
	s, err := OpenFile(path, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testPattern returns n bytes mixing what compressors meet: random (incompressible) runs,
// text-like runs, repeated bytes and zeros, chosen by seed.
func testPattern(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 99))
	b := make([]byte, n)
	words := []string{"qcow2 ", "cluster ", "refcount ", "L2 table ", "snapshot ", "\n"}
	for i := 0; i < n; {
		run := min(n-i, 64+rng.IntN(4096))
		switch rng.IntN(4) {
		case 0:
			for j := 0; j < run; j++ {
				b[i+j] = byte(rng.Uint32())
			}
		case 1:
			for j := 0; j < run; {
				j += copy(b[i+j:i+run], words[rng.IntN(len(words))])
			}
		case 2:
			c := byte(rng.Uint32())
			for j := 0; j < run; j++ {
				b[i+j] = c
			}
		}
		i += run
	}
	return b
}

// writeTemp writes b to a new file in dir and returns its path.
func writeTemp(t testing.TB, dir, name string, b []byte) string {
	t.Helper()
	p := dir + "/" + name
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// testRand is a fixed-seed generator for test data that needs no particular seed.
var testRand = rand.New(rand.NewPCG(12345, 678))
