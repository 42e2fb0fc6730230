// The bitmap operations of bitmap_ops.go: merge sets exactly the target granules a dirty
// source granule overlaps, whatever the two granularities; and what the operations leave is
// what a reopen finds (names, order, flags, bits).
package qcow2

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

func TestBitmapMergeSetsOverlappedGranules(t *testing.T) {
	t.Parallel()
	const size = 3*mib + 12345 // a last granule that passes the end of the disk
	img := openTestImage(t, engCreate(t, t.TempDir(), "m.qcow2", "", fmt.Sprint(size)), OpenOptions{})
	grans := []uint64{512, 4096, 65536, 1 << 20}
	rng := rand.New(rand.NewPCG(7, 8))
	for i, gs := range grans {
		for j, gd := range grans {
			src, dst := fmt.Sprintf("s%d-%d", i, j), fmt.Sprintf("d%d-%d", i, j)
			if err := img.AddBitmap(src, gs, false); err != nil {
				t.Fatal(err)
			}
			if err := img.AddBitmap(dst, gd, true); err != nil {
				t.Fatal(err)
			}
			sbm := img.ownBitmap(src)
			want := map[uint64]bool{}
			for k := 0; k < 6; k++ {
				off, n := rng.Uint64N(size), 1+rng.Uint64N(200*kib)
				sbm.setRange(off, n)
			}
			for g := uint64(0); g < sbm.granules; g++ {
				if sbm.get(granuleIndex(g)) {
					for d := g * gs / gd; d <= min(size-1, (g+1)*gs-1)/gd; d++ {
						want[d] = true
					}
				}
			}
			if err := img.MergeBitmap(dst, img, src); err != nil {
				t.Fatal(err)
			}
			dbm := img.ownBitmap(dst)
			if got := dbm.countSet(); got != uint64(len(want)) {
				t.Errorf("merge of %d-byte granules into %d-byte ones: %d dirty, want %d", gs, gd, got, len(want))
			}
			for d := range want {
				if !dbm.get(granuleIndex(d)) {
					t.Errorf("merge of %d-byte granules into %d-byte ones: granule %d clean", gs, gd, d)
					break
				}
			}
		}
	}
}

func TestBitmapOpsSurviveReopen(t *testing.T) {
	t.Parallel()
	p := engCreate(t, t.TempDir(), "r.qcow2", "cluster_size=4k", "8M")
	engQemu(t, "qemu-img", "bitmap", "--add", p, "old")
	engQemu(t, "qemu-img", "bitmap", "--add", p, "gone")
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(img.AddBitmap("a", 0, false))
	must(img.AddBitmap("b", 512, true))
	must(img.RemoveBitmap("gone"))
	must(img.AddBitmap("gone", 65536, false))
	if _, err := img.WriteAt(make([]byte, 4096), 1*mib); err != nil {
		t.Fatal(err)
	}
	must(img.EnableBitmap("old", false))
	must(img.ClearBitmap("a"))
	must(img.MergeBitmap("b", img, "gone"))
	var be *BitmapError
	if err := img.AddBitmap("a", 0, false); !errors.As(err, &be) || be.Msg != "Bitmap already exists: a" {
		t.Errorf("adding a twice: %v", err)
	}
	must(img.Close())
	corpus.RequireClean(t, p)
	ro := openTestImage(t, p, OpenOptions{ReadOnly: true, ReadBitmaps: true})
	var got []string
	for _, b := range ro.Bitmaps() {
		got = append(got, fmt.Sprintf("%s g=%d on=%v inuse=%v dirty=%d", b.Name, b.Granularity, b.Enabled, b.InUse, b.DirtyBytes))
	}
	// On-disk ones first, then the new ones newest first (QEMU's order). "old" was disabled
	// after the write, "a" cleared after it; "b" got the 64 KiB granule "gone" marked.
	want := []string{
		"old g=4096 on=false inuse=false dirty=4096",
		"gone g=65536 on=true inuse=false dirty=65536",
		"b g=512 on=false inuse=false dirty=65536",
		"a g=4096 on=true inuse=false dirty=0",
	}
	if !slices.Equal(got, want) {
		t.Errorf("after reopen:\n%q\nwant\n%q", got, want)
	}
}
