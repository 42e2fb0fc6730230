package qcow2

import (
	"sync"
	"testing"
	"time"
)

// bitmapHookLog records the BitmapHooks calls.
type bitmapHookLog struct {
	NopHooks
	mu     sync.Mutex
	dirty  map[string]uint64
	bad    int
	stored int
}

func (h *bitmapHookLog) BitmapDirty(name string, n uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.dirty[name] = n
}
func (h *bitmapHookLog) BitmapsInconsistent(n int) { h.mu.Lock(); h.bad = n; h.mu.Unlock() }
func (h *bitmapHookLog) BitmapsStored(time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stored++
}

// TestBitmapHooksReportDirtyBytes: a Hooks that is also a BitmapHooks learns each loaded
// bitmap's dirty bytes at open and at Flush, the number of in-use bitmaps, and the store.
func TestBitmapHooksReportDirtyBytes(t *testing.T) {
	dir := t.TempDir()
	p := bitmapImage(t, dir) // b0 64k and b2 512 B dirty over 1M+64k; b1 disabled
	h := &bitmapHookLog{dirty: map[string]uint64{}}
	img, err := Open(p, OpenOptions{Hooks: h})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]uint64{"b0": 64 * kib, "b1": 0, "b2": 64 * kib}
	if h.bad != 0 || len(h.dirty) != 3 || h.dirty["b0"] != want["b0"] || h.dirty["b2"] != want["b2"] {
		t.Errorf("at open: dirty %v, inconsistent %d; want %v, 0", h.dirty, h.bad, want)
	}
	engWrite(t, img, 3*mib+100, make([]byte, 1000))
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if h.dirty["b0"] != 128*kib || h.dirty["b2"] != 64*kib+3*512 || h.dirty["b1"] != 0 {
		t.Errorf("after a flush: %v", h.dirty)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	if h.stored != 1 {
		t.Errorf("%d stores reported, want 1", h.stored)
	}
}
