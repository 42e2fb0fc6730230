package qcow2

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

// readRecorder is a FileStorage that records the size of every read inside a set of host
// ranges (the L2 tables of the image).
type readRecorder struct {
	*FileStorage
	mu     sync.Mutex
	tables map[HostOffset]bool // cluster offsets of L2 tables
	cs     uint64
	sizes  []int
}

func (r *readRecorder) ReadAt(p []byte, off int64) (int, error) {
	r.mu.Lock()
	if r.tables[HostOffset(uint64(off)/r.cs*r.cs)] {
		r.sizes = append(r.sizes, len(p))
	}
	r.mu.Unlock()
	return r.FileStorage.ReadAt(p, off)
}

// occupancyRecorder is a Hooks with CacheHooks that keeps the largest L2 occupancy reported.
type occupancyRecorder struct {
	NopHooks
	maxBytes, capacity uint64
	hits, misses       int
}

func (o *occupancyRecorder) CacheOccupancy(k CacheKind, bytes, capacity uint64) {
	if k == CacheL2 {
		o.maxBytes, o.capacity = max(o.maxBytes, bytes), capacity
	}
}

func (o *occupancyRecorder) CacheAccess(k CacheKind, hit bool) {
	if k != CacheL2 {
		return
	}
	if hit {
		o.hits++
	} else {
		o.misses++
	}
}

// TestL2MissReadsOneSlice: with an L2 cache that cannot map the whole disk, a lookup reads only
// the 4 KiB slice it needs (QEMU's l2-cache-entry-size default), never the whole 64 KiB table;
// the cache reports its occupancy, which never exceeds its capacity, and hits and misses per
// lookup; and what qemu-io wrote reads back.
func TestL2MissReadsOneSlice(t *testing.T) {
	const tables = 16
	p := engCreate(t, t.TempDir(), "big.qcow2", "cluster_size=64k", "64G")
	// One cluster at the start of each of 16 tables, and one in the table's last slice.
	var args []string
	for i := 0; i < tables; i++ {
		base := int64(i) << 29
		args = append(args, "-c", fmt.Sprintf("write -P %d %d 64k", i+1, base), "-c", fmt.Sprintf("write -P %d %d 64k", i+101, base+(1<<29)-(64<<10)))
	}
	engQemu(t, "qemu-io", append(append([]string{"-f", "qcow2"}, args...), p)...)

	rec := &readRecorder{tables: map[HostOffset]bool{}, cs: 64 << 10}
	hooks := &occupancyRecorder{}
	img := openTestImage(t, p, OpenOptions{ReadOnly: true, L2CacheBytes: 64 << 10, Hooks: hooks,
		Opener: func(path string, fo FileOptions) (Storage, error) {
			f, err := OpenFile(path, fo)
			if err != nil || fo.Role != roleImage {
				return f, err
			}
			rec.FileStorage = f
			return rec, nil
		}})
	if img.caches.sliceBytes != 4096 {
		t.Fatalf("slice size %d, want 4096", img.caches.sliceBytes)
	}
	for _, e := range img.l1.entries {
		if off := e.l2Offset(); off != 0 {
			rec.tables[off] = true
		}
	}
	if len(rec.tables) != tables {
		t.Fatalf("%d L2 tables, want %d", len(rec.tables), tables)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	got := make([]byte, 4096)
	for n := 0; n < 400; n++ {
		i := rng.IntN(tables)
		last := rng.IntN(2) == 1
		off := int64(i)<<29 + int64(rng.IntN(16))*4096
		pat := byte(i + 1)
		if last {
			off, pat = int64(i)<<29+(1<<29)-(64<<10)+int64(rng.IntN(16))*4096, byte(i+101)
		}
		if _, err := img.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, bytes.Repeat([]byte{pat}, 4096)) {
			t.Fatalf("read at %#x: got %#x..., want %#x", off, got[0], pat)
		}
	}
	// A read in the middle of a table, where nothing was written, reads zeros.
	if _, err := img.ReadAt(got, 5<<29+(200<<20)); err != nil || !bytes.Equal(got, make([]byte, 4096)) {
		t.Fatalf("unwritten middle of a table: err %v, data %#x...", err, got[0])
	}
	if len(rec.sizes) == 0 {
		t.Fatal("no L2 reads recorded")
	}
	for _, n := range rec.sizes {
		if n != 4096 {
			t.Fatalf("L2 reads of %v bytes, want 4096 each", rec.sizes)
		}
	}
	if hooks.capacity != 64<<10 || hooks.maxBytes == 0 || hooks.maxBytes > hooks.capacity {
		t.Errorf("L2 occupancy reported: at most %d of %d bytes, want 1..65536 of 65536", hooks.maxBytes, hooks.capacity)
	}
	if hooks.misses == 0 || hooks.hits == 0 {
		t.Errorf("L2 lookups: %d hits, %d misses; want some of each", hooks.hits, hooks.misses)
	}
	t.Logf("%d L2 reads of 4 KiB, %d hits, %d misses, at most %d bytes cached", len(rec.sizes), hooks.hits, hooks.misses, hooks.maxBytes)
}

// TestSlicedWritesMatchQemu: random writes over a 64 GiB image with an L2 cache of 4 slices,
// so that tables are evicted with some slices dirty and reloaded slice by slice, then a flush:
// qemu-io reads back every write, and qemu-img check (openTestImage's cleanup) finds the image
// clean. New tables in fresh clusters are written slice by slice only; the test reads them
// back through QEMU, which reads whole tables.
func TestSlicedWritesMatchQemu(t *testing.T) {
	p := engCreate(t, t.TempDir(), "big.qcow2", "cluster_size=64k", "64G")
	img := openTestImage(t, p, OpenOptions{L2CacheBytes: 16 << 10})
	rng := rand.New(rand.NewPCG(5, 6))
	want := map[int64]byte{}
	buf := make([]byte, 4096)
	for n := 0; n < 300; n++ {
		// Few tables, many slices each: revisits find tables partly loaded.
		off := int64(rng.IntN(4))<<29 + int64(rng.IntN(1<<17))*4096
		pat := byte(1 + rng.IntN(250))
		for i := range buf {
			buf[i] = pat
		}
		if _, err := img.WriteAt(buf, off); err != nil {
			t.Fatal(err)
		}
		want[off] = pat
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	var args []string
	for off, pat := range want {
		args = append(args, "-c", fmt.Sprintf("read -q -P %d %d 4096", pat, off))
	}
	// The image stays open (flushed): qemu-io reads it with force-share.
	engQemu(t, "qemu-io", append(append([]string{"-r", "-U", "-f", "qcow2"}, args...), p)...)
}
