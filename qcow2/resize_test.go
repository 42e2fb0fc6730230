// Resize: growth moves the L1 table by copy-then-switch, shrinking frees the clusters past the
// end, and a grown range reads as zeros, also over a longer backing file.
package qcow2

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// TestResizeMovesL1AndZeroesGrownRange grows with 512-byte clusters (the L1 table moves by copy-then-switch), shrinks
// (clusters past the end freed), and grows again (the old tail reads as zeros); also over a
// longer backing file, whose data must not show in the grown range.
func TestResizeMovesL1AndZeroesGrownRange(t *testing.T) {
	t.Parallel()
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
	corpus.RequireClean(t, p)
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
