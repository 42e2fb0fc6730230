// Helpers that break qemu-img-made qcow2 images on purpose (16-bit refcounts, 64 KiB or other
// cluster sizes), by poking their metadata.
package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

func readU64(t *testing.T, f *os.File, off int64) uint64 {
	t.Helper()
	var b [8]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint64(b[:])
}

func readU32(t *testing.T, f *os.File, off int64) uint32 {
	t.Helper()
	var b [4]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint32(b[:])
}

// setRefcount16 sets the 16-bit refcount of host cluster c (counted by the first refcount
// block) of the image at path.
func setRefcount16(t *testing.T, path string, c uint64, v uint16) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if bits := readU32(t, f, 96); bits != 4 {
		t.Fatalf("%s: refcount_order %d, want 4 (16 bits)", path, bits)
	}
	reftable := readU64(t, f, 48)
	block := readU64(t, f, int64(reftable)) &^ 511
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	if _, err := f.WriteAt(b[:], int64(block+2*c)); err != nil {
		t.Fatal(err)
	}
}

// firstDataCluster returns the host cluster index holding guest cluster 0.
func firstDataCluster(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bits := readU32(t, f, 20)
	l1 := readU64(t, f, 40)
	l2 := readU64(t, f, int64(l1)) & 0x00fffffffffffe00
	host := readU64(t, f, int64(l2)) & 0x00fffffffffffe00
	if host == 0 {
		t.Fatalf("%s: guest cluster 0 is not allocated", path)
	}
	return host >> bits
}

// brokenImages makes, in dir: clean.qcow2, leaked.qcow2 (one cluster inside the file with
// refcount 1 and no reference) and corrupt.qcow2 (a data cluster with refcount 0).
func brokenImages(t *testing.T, dir string) {
	t.Helper()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "clean.qcow2", "16M")
	sh(t, dir, "qemu-io", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0xa5 8M 64k", "clean.qcow2")
	for _, n := range []string{"leaked.qcow2", "corrupt.qcow2"} {
		sh(t, dir, "cp", "clean.qcow2", n)
	}
	leaked := filepath.Join(dir, "leaked.qcow2")
	st, err := os.Stat(leaked)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(leaked, st.Size()+65536); err != nil {
		t.Fatal(err)
	}
	setRefcount16(t, leaked, uint64(st.Size())/65536, 1)
	corrupt := filepath.Join(dir, "corrupt.qcow2")
	setRefcount16(t, corrupt, firstDataCluster(t, corrupt), 0)
}
