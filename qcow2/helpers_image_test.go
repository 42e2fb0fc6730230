// Test helpers: opening test images with our engine, writing and reading them, poking bytes
// at offsets read from an image's own header, test data, and scratch memory for models.
package qcow2

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"golang.org/x/sys/unix"
)

// openTestImage opens path with our engine and registers a cleanup that closes the image and
// then requires the image consistent (requireConsistent): every test that writes an image
// through the engine uses it, so a test that leaves a leak or a corruption behind fails.
func openTestImage(t testing.TB, path string, o OpenOptions) *Image {
	t.Helper()
	img, err := Open(path, o)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() {
		if err := img.Close(); err != nil {
			t.Errorf("close %s: %v", path, err)
		}
		if !t.Failed() {
			requireConsistent(t, path)
		}
	})
	return img
}

// requireConsistent requires `qemu-img check` (the oracle) to find the image at path clean,
// and our own Check to agree with it on every counter: a test image closed by the engine is
// checked both ways, so a bug of either the writer or the checker shows.
func requireConsistent(t testing.TB, path string) {
	t.Helper()
	q := corpus.QemuCheck(t, path, corpus.CheckOptions{})
	if !q.Clean() {
		t.Errorf("qemu-img check %s: %v", path, q)
	}
	ours, err := Check(path, RepairNone)
	if err != nil {
		t.Errorf("our check of %s: %v", path, err)
		return
	}
	ccCompareWithQemu(t, ours, q)
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

// engReadAll reads the whole guest through our engine.
func engReadAll(t testing.TB, img *Image) []byte {
	t.Helper()
	b := make([]byte, img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

// engFirstDiff describes where two byte slices differ.
func engFirstDiff(a, b []byte) string {
	if len(a) != len(b) {
		return "lengths differ"
	}
	for i := range a {
		if a[i] != b[i] {
			j := i
			for j < len(a) && a[j] != b[j] {
				j++
			}
			return fmt.Sprintf("first difference at %d for %d bytes", i, j-i)
		}
	}
	return ""
}

// ccCopy copies src to a new file in dir and returns its path.
func ccCopy(t testing.TB, src, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
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

// ccImg gives tests byte-level access to an image file, at offsets read from its own header.
type ccImg struct {
	t    testing.TB
	path string
	h    *Header
}

func (m *ccImg) read(off uint64, n int) []byte {
	m.t.Helper()
	f, err := os.Open(m.path)
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, int64(off)); err != nil {
		m.t.Fatalf("read %d bytes at %#x: %v", n, off, err)
	}
	return b
}

func (m *ccImg) write(off uint64, b []byte) {
	m.t.Helper()
	f, err := os.OpenFile(m.path, os.O_RDWR, 0)
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, int64(off)); err != nil {
		m.t.Fatal(err)
	}
}

func (m *ccImg) u64(off uint64) uint64 { return binary.BigEndian.Uint64(m.read(off, 8)) }

func (m *ccImg) putU64(off, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	m.write(off, b[:])
}

// l2EntryOff returns the file offset of the L2 entry mapping guest offset g (the active L1 must
// map it to an L2 table).
func (m *ccImg) l2EntryOff(g uint64) uint64 {
	m.t.Helper()
	geo := m.h.Geometry()
	l1e := l1Entry(m.u64(uint64(m.h.L1TableOffset) + uint64(GuestOffset(g).l1Index(geo))*8))
	if l1e.l2Offset() == 0 {
		m.t.Fatalf("guest %#x has no L2 table", g)
	}
	return uint64(l1e.l2Offset()) + uint64(GuestOffset(g).l2Index(geo))*geo.l2EntrySize()
}

func (m *ccImg) l1EntryOff(g uint64) uint64 {
	return uint64(m.h.L1TableOffset) + uint64(GuestOffset(g).l1Index(m.h.Geometry()))*8
}

// dataCluster returns the host cluster holding guest offset g.
func (m *ccImg) dataCluster(g uint64) hostCluster {
	m.t.Helper()
	e := l2Entry(m.u64(m.l2EntryOff(g)))
	if e.Offset() == 0 {
		m.t.Fatalf("guest %#x not allocated (entry %#x)", g, uint64(e))
	}
	return e.Offset().cluster(m.h.Geometry())
}

// refcount reads cluster c's stored refcount.
func (m *ccImg) refcount(c hostCluster) refcount {
	m.t.Helper()
	g := m.h.Geometry()
	rt := refTableEntry(m.u64(uint64(m.h.RefTableOffset) + uint64(c.refTableIndex(g))*8))
	if rt.Offset() == 0 {
		return 0
	}
	return RefBlock{Data: m.read(uint64(rt.Offset()), int(g.ClusterSize())), Order: g.RefcountOrder}.Get(c.refBlockIndex(g))
}

// setRefcount stores v as cluster c's refcount; its refcount block must exist.
func (m *ccImg) setRefcount(c hostCluster, v refcount) {
	m.t.Helper()
	g := m.h.Geometry()
	rt := refTableEntry(m.u64(uint64(m.h.RefTableOffset) + uint64(c.refTableIndex(g))*8))
	if rt.Offset() == 0 {
		m.t.Fatalf("no refcount block for cluster %d", c)
	}
	blk := RefBlock{Data: m.read(uint64(rt.Offset()), int(g.ClusterSize())), Order: g.RefcountOrder}
	blk.Set(c.refBlockIndex(g), v)
	m.write(uint64(rt.Offset()), blk.Data)
}

func ccOpenImg(t testing.TB, path string) *ccImg {
	t.Helper()
	s, err := OpenFile(path, FileOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &ccImg{t: t, path: path, h: h}
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

// testRand is a fixed-seed generator for test data that needs no particular seed.
var testRand = rand.New(rand.NewPCG(12345, 678))

// unmapFlag is ZeroMayUnmap when unmap is set: the flags of a zero request that may
// deallocate, for tests that pick it at random.
func unmapFlag(unmap bool) ZeroFlags {
	if unmap {
		return ZeroMayUnmap
	}
	return 0
}

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

func engPattern(n int, seed byte) []byte {
	b := make([]byte, n)
	fillPattern(b, seed)
	return b
}

func engWrite(t *testing.T, img *Image, off int64, b []byte) {
	t.Helper()
	if _, err := img.WriteAt(b, off); err != nil {
		t.Fatalf("write %d+%d: %v", off, len(b), err)
	}
}
