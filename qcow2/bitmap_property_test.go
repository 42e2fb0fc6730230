// The dirty bits under concurrent random requests equal a shadow model of the granules the
// requests touched, in memory and after a store and a reload.
package qcow2

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
)

// TestBitmapDirtyBitsMatchTouchedGranules: 8 goroutines send random writes, write-zeroes and
// discards (any alignment, some reaching the end of a disk whose size is not a multiple of the
// granularity); afterwards every enabled bitmap's bits are exactly the granules some request
// touched (plus what QEMU's write had set), the disabled bitmap stays clean, and after Close and a
// new open the loaded bits are the same.
func TestBitmapDirtyBitsMatchTouchedGranules(t *testing.T) {
	dir := t.TempDir()
	const size = 8*mib + 1536
	p := engCreate(t, dir, "p.qcow2", "cluster_size=4k", fmt.Sprint(size))
	engQemu(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "fine")
	engQemu(t, "qemu-img", "bitmap", "--add", "-g", "64k", p, "coarse")
	engQemu(t, "qemu-img", "bitmap", "--add", "-g", "4k", "--disable", p, "off")
	engQemu(t, "qemu-io", "-c", "write 3M 4k", p)
	grans := map[string]uint64{"fine": 512, "coarse": 64 * kib, "off": 4 * kib}
	shadow := map[string]map[uint64]bool{}
	for name, g := range grans {
		shadow[name] = map[uint64]bool{}
		if name == "off" {
			continue // disabled before QEMU's write
		}
		for i := uint64(3*mib) / g; i <= (3*mib+4*kib-1)/g; i++ {
			shadow[name][i] = true
		}
	}
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 12))
			buf := make([]byte, 256*kib)
			for range 40 {
				n := 1 + rng.Uint64N(200*kib)
				off := rng.Uint64N(size - n + 1)
				if rng.IntN(8) == 0 {
					off = size - n
				}
				var err error
				switch rng.IntN(3) {
				case 0:
					_, err = img.WriteAt(buf[:n], int64(off))
				case 1:
					err = img.Zero(GuestOffset(off), n, ZeroFlags(rng.IntN(2))*ZeroMayUnmap)
				default:
					err = img.Discard(GuestOffset(off), n)
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				for name, g := range grans {
					if name == "off" {
						continue
					}
					for i := off / g; i <= (off+n-1)/g; i++ {
						shadow[name][i] = true
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	check := func(when string, img *Image) {
		t.Helper()
		for _, bm := range img.bitmaps {
			name := bm.entry.name
			g := grans[name]
			if bm.granularity() != g || bm.granules != (size+g-1)/g {
				t.Fatalf("%s: %s has granularity %d and %d granules", when, name, bm.granularity(), bm.granules)
			}
			bad := 0
			for i := range bm.granules {
				if bm.get(granuleIndex(i)) != shadow[name][i] {
					bad++
				}
			}
			if set := bm.countSet(); bad != 0 || set != uint64(len(shadow[name])) || bm.dirtyGranules() != set {
				t.Errorf("%s: %s: %d granules differ from the model; %d set, model %d", when, name, bad, set, len(shadow[name]))
			}
		}
	}
	check("while open", img)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	img = openTestImage(t, p, OpenOptions{})
	check("reloaded", img)
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBitmapSetRangeWords: setRange over word and bitmap edges sets exactly the granules of
// the range, also when repeated.
func TestBitmapSetRangeWords(t *testing.T) {
	for _, c := range []struct{ off, n uint64 }{{0, 1}, {511, 2}, {63 * 512, 512}, {63 * 512, 513}, {100, 64 * 512 * 3}, {200 * 512, 1 << 30}} {
		bm := newDirtyBitmap(bitmapEntry{granBits: 9}, 200*512+7)
		bm.words = make([]atomic.Uint64, bitmapWords(200*512+7, 9))
		bm.setRange(c.off, c.n)
		bm.setRange(c.off, c.n)
		first, last := c.off/512, min((c.off+c.n-1)/512, bm.granules-1)
		for i := range bm.granules {
			if bm.get(granuleIndex(i)) != (i >= first && i <= last) {
				t.Errorf("%+v: granule %d is %v", c, i, bm.get(granuleIndex(i)))
			}
		}
		if got := bm.countSet(); got != last-first+1 || bm.dirtyGranules() != got {
			t.Errorf("%+v: %d set, %d counted, want %d", c, got, bm.dirtyGranules(), last-first+1)
		}
	}
}
