package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

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

// TestSnapshotServeAndWrite serves an internal snapshot read-only, and writes to the active
// layer of an image whose clusters and L2 tables are shared with a snapshot: the writes copy
// (COW) shared L2 tables and clusters, and the snapshot's contents stay as they were.
func TestSnapshotServeAndWrite(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "s.qcow2", "cluster_size=4k", "4M")
	engQemu(t, "qemu-io", "-c", "write -P 0xaa 0 128k", p)
	engQemu(t, "qemu-img", "snapshot", "-c", "s1", p)
	engQemu(t, "qemu-io", "-c", "write -P 0xbb 64k 8k", p)
	snapWant := engConvertRaw(t, p, "-l", "snapshot.name=s1")

	ro, err := Open(p, OpenOptions{Snapshot: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := engReadAll(t, ro); !bytes.Equal(got, snapWant) {
		t.Fatalf("snapshot read differs: %s", engFirstDiff(got, snapWant))
	}
	if _, err := ro.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to a snapshot: %v, want ErrReadOnly", err)
	}
	if len(ro.Snapshots()) != 1 {
		t.Fatalf("snapshots: %+v", ro.Snapshots())
	}
	ro.Close()

	shadow := engConvertRaw(t, p)
	img := openTestImage(t, p, OpenOptions{})
	for _, w := range []struct {
		off int64
		n   int
	}{{0, 4096}, {1000, 10}, {70 << 10, 20 << 10}, {2 << 20, 4096}} {
		b := engPattern(w.n, byte(w.off))
		engWrite(t, img, w.off, b)
		copy(shadow[w.off:], b)
	}
	if got := engReadAll(t, img); !bytes.Equal(got, shadow) {
		t.Fatalf("active layer differs: %s", engFirstDiff(got, shadow))
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	engRequireClean(t, p)
	if got := engConvertRaw(t, p, "-l", "snapshot.name=s1"); !bytes.Equal(got, snapWant) {
		t.Fatalf("snapshot changed by writes to the active layer: %s", engFirstDiff(got, snapWant))
	}
	if got := engConvertRaw(t, p); !bytes.Equal(got, shadow) {
		t.Fatalf("qemu reads the active layer differently: %s", engFirstDiff(got, shadow))
	}
}

// engRawImage gives raw access to an image file for corrupting it.
type engRawImage struct {
	t *testing.T
	f *os.File
	h *Header
}

func engOpenRaw(t *testing.T, p string) *engRawImage {
	h, err := readHeaderFile(t, p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &engRawImage{t, f, h}
}

func (r *engRawImage) u64(off uint64) uint64 {
	var b [8]byte
	if _, err := r.f.ReadAt(b[:], int64(off)); err != nil {
		r.t.Fatal(err)
	}
	return binary.BigEndian.Uint64(b[:])
}

func (r *engRawImage) put(off, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	if _, err := r.f.WriteAt(b[:], int64(off)); err != nil {
		r.t.Fatal(err)
	}
}

// l2EntryOff is the file offset of guest cluster gc's L2 entry (its table must exist).
func (r *engRawImage) l2EntryOff(gc uint64) uint64 {
	g := r.h.Geometry()
	l1e := r.u64(uint64(r.h.L1TableOffset) + (gc>>g.l2Bits())*8)
	return l1e&l1OffsetMask + (gc&(g.l2Entries()-1))*g.l2EntrySize()
}

func (r *engRawImage) headerIncompat() uint64 { return r.u64(offIncompatibleFeatures) }

// TestCorruptionMarked: an L2 entry pointing into metadata, or with reserved bits, fails the
// request with an error matching ErrCorrupt and EIO, sets the corrupt bit, refuses further
// writes; a read-write open of the marked image is refused, a read-only open works.
func TestCorruptionMarked(t *testing.T) {
	for _, c := range []struct {
		name   string
		mangle func(r *engRawImage) uint64 // returns the bad guest offset
	}{
		{"points-at-L1", func(r *engRawImage) uint64 {
			r.put(r.l2EntryOff(1), uint64(r.h.L1TableOffset)|entryCopied)
			return 1 << 16
		}},
		{"points-at-reftable", func(r *engRawImage) uint64 {
			r.put(r.l2EntryOff(2), uint64(r.h.RefTableOffset)|entryCopied)
			return 2 << 16
		}},
		{"unaligned", func(r *engRawImage) uint64 {
			r.put(r.l2EntryOff(2), r.u64(r.l2EntryOff(0))|1<<9)
			return 2 << 16
		}},
		{"reserved-bits", func(r *engRawImage) uint64 {
			r.put(r.l2EntryOff(3), r.u64(r.l2EntryOff(0))|1<<60)
			return 3 << 16
		}},
		{"past-eof", func(r *engRawImage) uint64 {
			r.put(r.l2EntryOff(1), 1<<40|entryCopied)
			return 1 << 16
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := engCreate(t, dir, "c.qcow2", "", "4M")
			engQemu(t, "qemu-io", "-c", "write -P 1 0 64k", p)
			r := engOpenRaw(t, p)
			bad := c.mangle(r)
			img, err := Open(p, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 512)
			_, err = img.ReadAt(buf, int64(bad))
			if !errors.Is(err, ErrCorrupt) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("read of the bad cluster: %v, want ErrCorrupt and EIO", err)
			}
			if r.headerIncompat()&incompatCorrupt == 0 {
				t.Fatal("corrupt bit not set on disk")
			}
			if _, err := img.WriteAt(buf, 1<<20); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("write after corruption: %v, want ErrCorrupt", err)
			}
			img.Close()
			if _, err := Open(p, OpenOptions{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "read-only") {
				t.Fatalf("read-write open of a corrupt image: %v", err)
			}
			ro, err := Open(p, OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatalf("read-only open of a corrupt image: %v", err)
			}
			defer ro.Close()
			if _, err := ro.ReadAt(buf, 0); err != nil || buf[0] != 1 {
				t.Fatalf("read of a good cluster: %v", err)
			}
		})
	}
}

// TestAllocatorRefusesLiveCluster: an L2 table whose refcount was zeroed on disk is the first
// "free" cluster; the allocator must notice it is live (it is a cached L2 table) and mark the
// image corrupt instead of handing it out (cloud-hypervisor #8606).
func TestAllocatorRefusesLiveCluster(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "cluster_size=4k", "4M")
	engQemu(t, "qemu-io", "-c", "write -P 1 0 4k", p)
	r := engOpenRaw(t, p)
	l2Cluster := r.u64(uint64(r.h.L1TableOffset)) & l1OffsetMask >> 12
	rb := r.u64(uint64(r.h.RefTableOffset)) & reftableOffsetMask
	var zero [2]byte
	if _, err := r.f.WriteAt(zero[:], int64(rb+l2Cluster*2)); err != nil {
		t.Fatal(err)
	}
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	_, err = img.WriteAt(make([]byte, 4096), 8192)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write: %v, want ErrCorrupt", err)
	}
	if r.headerIncompat()&incompatCorrupt == 0 {
		t.Fatal("corrupt bit not set")
	}
	got := make([]byte, 4096)
	if _, err := img.ReadAt(got, 0); err != nil || got[0] != 1 {
		t.Fatalf("the L2 table was damaged: %v", err)
	}
}

// TestResize grows with 512-byte clusters (the L1 table moves by copy-then-switch), shrinks
// (clusters past the end freed), and grows again (the old tail reads as zeros); also over a
// longer backing file, whose data must not show in the grown range.
func TestResize(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "r.qcow2", "cluster_size=512", "1M")
	img := openTestImage(t, p, OpenOptions{})
	data := engPattern(32<<10, 3)
	engWrite(t, img, 1<<20-32<<10, data)
	l1Before := img.Header().L1TableOffset
	if err := img.Resize(100 << 20); err != nil {
		t.Fatal(err)
	}
	if img.Header().L1TableOffset == l1Before {
		t.Fatal("L1 table did not move")
	}
	engWrite(t, img, 99<<20, data)
	shadow := make([]byte, 100<<20)
	copy(shadow[1<<20-32<<10:], data)
	copy(shadow[99<<20:], data)
	if got := engReadAll(t, img); !bytes.Equal(got, shadow) {
		t.Fatalf("after growing: %s", engFirstDiff(got, shadow))
	}
	if err := img.Resize(1<<20 - 1536); err != nil {
		t.Fatal(err)
	}
	if err := img.Resize(3 << 20); err != nil {
		t.Fatal(err)
	}
	shadow = shadow[:3<<20]
	clear(shadow[1<<20-1536:])
	if got := engReadAll(t, img); !bytes.Equal(got, shadow) {
		t.Fatalf("after shrinking and growing: %s", engFirstDiff(got, shadow))
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	engRequireClean(t, p)
	if got := engConvertRaw(t, p); !bytes.Equal(got, shadow) {
		t.Fatalf("qemu reads differently: %s", engFirstDiff(got, shadow))
	}

	base := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(base, bytes.Repeat([]byte{0x77}, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	o := engCreate(t, dir, "o.qcow2", "backing_file="+base+",backing_fmt=raw", "1M")
	ov := openTestImage(t, o, OpenOptions{})
	if err := ov.Resize(3 << 20); err != nil {
		t.Fatal(err)
	}
	got := engReadAll(t, ov)
	want := append(bytes.Repeat([]byte{0x77}, 1<<20), make([]byte, 2<<20)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("grown overlay: %s", engFirstDiff(got, want))
	}
}

type countingHooks struct {
	mu        sync.Mutex
	alloc     map[AllocKind]uint64
	freed     uint64
	flushes   int
	accesses  int
	grown     int
	states    []State
	evictions int
}

func (h *countingHooks) ClustersAllocated(k AllocKind, n uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.alloc == nil {
		h.alloc = map[AllocKind]uint64{}
	}
	h.alloc[k] += n
}
func (h *countingHooks) ClustersFreed(n uint64)       { h.mu.Lock(); h.freed += n; h.mu.Unlock() }
func (h *countingHooks) AllocationDone(time.Duration) {}
func (h *countingHooks) RefTableGrown(uint64)         { h.mu.Lock(); h.grown++; h.mu.Unlock() }
func (h *countingHooks) CacheAccess(CacheKind, bool)  { h.mu.Lock(); h.accesses++; h.mu.Unlock() }
func (h *countingHooks) CacheEviction(CacheKind)      { h.mu.Lock(); h.evictions++; h.mu.Unlock() }
func (h *countingHooks) Flushed(time.Duration)        { h.mu.Lock(); h.flushes++; h.mu.Unlock() }
func (h *countingHooks) StateChanged(s State) {
	h.mu.Lock()
	h.states = append(h.states, s)
	h.mu.Unlock()
}

// TestHooksAndLazyRefcounts: hooks see allocations by kind, frees, flushes, cache traffic,
// reftable growth and state changes; with lazy refcounts the dirty bit is on disk before the
// first write and cleared by a clean close.
func TestHooksAndLazyRefcounts(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "h.qcow2", "cluster_size=512,lazy_refcounts=on", "16M")
	h := &countingHooks{}
	img := openTestImage(t, p, OpenOptions{Hooks: h, L2CacheBytes: 2048})
	r := engOpenRaw(t, p)
	if r.headerIncompat()&incompatDirty != 0 {
		t.Fatal("dirty before any write")
	}
	engWrite(t, img, 0, engPattern(10<<20, 1))
	if r.headerIncompat()&incompatDirty == 0 {
		t.Fatal("dirty bit not on disk after a lazy write")
	}
	if err := img.Discard(0, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if r.headerIncompat()&incompatDirty != 0 {
		t.Fatal("dirty bit still set after close")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.alloc[AllocData] < 10<<20/512 || h.alloc[AllocL2] == 0 || h.alloc[AllocRefBlock] == 0 {
		t.Errorf("allocations: %v", h.alloc)
	}
	if h.freed < 1<<20/512 || h.flushes == 0 || h.accesses == 0 || h.evictions == 0 || h.grown == 0 {
		t.Errorf("freed %d flushes %d accesses %d evictions %d grown %d", h.freed, h.flushes, h.accesses, h.evictions, h.grown)
	}
	sawDirty := false
	for _, s := range h.states {
		sawDirty = sawDirty || s.Dirty
	}
	if !sawDirty || h.states[len(h.states)-1].Dirty {
		t.Errorf("states: dirty seen %v, last %+v", sawDirty, h.states[len(h.states)-1])
	}
}

// TestWriteThrough: with WriteThrough every write is durable when it returns: a crash that
// drops everything unsynced keeps it, and the image is consistent.
func TestWriteThrough(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "w.qcow2", "cluster_size=4k", "4M")
	s, err := memstore.FromFile(p)
	if err != nil {
		t.Fatal(err)
	}
	img, err := OpenStorage(s, dir, OpenOptions{WriteThrough: true})
	if err != nil {
		t.Fatal(err)
	}
	want := engPattern(10000, 9)
	engWrite(t, img, 5000, want)
	if err := img.Zero(40000, 8192, ZeroMayUnmap); err != nil {
		t.Fatal(err)
	}
	crashed := s.CrashClone(nil, memstore.CrashConfig{Policy: memstore.DropUnsynced})
	img.Close()
	f := filepath.Join(dir, "crashed.qcow2")
	if err := crashed.WriteFile(f); err != nil {
		t.Fatal(err)
	}
	engRequireClean(t, f)
	got := engConvertRaw(t, f)
	if !bytes.Equal(got[5000:15000], want) {
		t.Fatal("write-through data lost in a crash")
	}
}

// TestBackingChainLimits: loops and over-deep chains are refused with a clear error.
func TestBackingChainLimits(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.qcow2")
	b := engCreate(t, dir, "b.qcow2", "", "1M")
	engCreate(t, dir, "a.qcow2", "backing_file="+b+",backing_fmt=qcow2", "1M")
	engQemu(t, "qemu-img", "rebase", "-u", "-F", "qcow2", "-b", a, b)
	if _, err := Open(a, OpenOptions{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "loops") {
		t.Fatalf("loop: %v", err)
	}
	prev := engCreate(t, dir, "c0.qcow2", "", "1M")
	for i := 1; i <= maxChainDepth+1; i++ {
		prev = engCreate(t, dir, "c"+itoaTest(i)+".qcow2", "backing_file="+prev+",backing_fmt=qcow2", "1M")
	}
	if _, err := Open(prev, OpenOptions{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "deeper") {
		t.Fatalf("deep chain: %v", err)
	}
	img, err := Open(prev, OpenOptions{ReadOnly: true, NoBacking: true})
	if err != nil {
		t.Fatalf("NoBacking: %v", err)
	}
	img.Close()
}

func itoaTest(i int) string { return string(rune('a'+i/26)) + string(rune('a'+i%26)) }

var _ = rand.IntN
