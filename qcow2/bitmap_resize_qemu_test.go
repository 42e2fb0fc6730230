// Resize of an image with persistent bitmaps against qemu-img resize 7.2.
package qcow2

import (
	"errors"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// TestBitmapsFollowResizeLikeQemu: growing and shrinking an image whose bitmaps QEMU made and
// dirtied (with dirty granules past the shrunk end, one of them in the last word kept) leaves
// the bitmaps that qemu-img resize leaves; granules a shrink cut come back clean when the same
// session grows the disk again: the same list and flags in qemu-img info, the same dirty maps as
// qemu-nbd -B serves them, and qemu-img check clean; the engine's own map agrees before close.
// With an in-use bitmap, both refuse, with qemu-img's message.
func TestBitmapsFollowResizeLikeQemu(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		sizes []uint64 // resized to each in turn, in one session here
	}{
		{"grow", []uint64{6<<20 + 512}},
		{"shrink", []uint64{3<<20 - 512}},
		{"shrink-grow", []uint64{3<<20 - 512, 6 << 20}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			base := bitmapImage(t, dir)
			engQemu(t, "qemu-io", "-c", "write -P 3 2880k 64k", "-c", "write -P 4 4032k 64k", base)
			ours, theirs := ccCopy(t, base, dir, "ours.qcow2"), ccCopy(t, base, dir, "theirs.qcow2")
			img, err := Open(ours, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, size := range c.sizes {
				engQemu(t, "qemu-img", "resize", "-f", "qcow2", "--shrink", theirs, strconv.FormatUint(size, 10))
				if err := img.Resize(size); err != nil {
					img.Close()
					t.Fatal(err)
				}
			}
			live := map[string]string{}
			for _, name := range []string{"b0", "b1", "b2"} {
				live[name] = ourDirtyMap(t, img, name)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if q := corpus.QemuCheck(t, ours, corpus.CheckOptions{}); !q.Clean() {
				t.Fatalf("qemu-img check after the resize: %v", q)
			}
			if a, b := qemuBitmaps(t, ours), qemuBitmaps(t, theirs); !reflect.DeepEqual(a, b) {
				t.Errorf("bitmaps: ours %v, qemu-img's %v", a, b)
			}
			for _, name := range []string{"b0", "b1", "b2"} {
				a, b := qemuDirtyMap(t, ours, name), qemuDirtyMap(t, theirs, name)
				if a != b {
					t.Errorf("%s stored:\nours\n%sqemu-img's\n%s", name, a, b)
				}
				if live[name] != b {
					t.Errorf("%s before close:\nours\n%sqemu-img's\n%s", name, live[name], b)
				}
			}
		})
	}
	t.Run("memory-cap", func(t *testing.T) {
		t.Parallel()
		p := bitmapImage(t, t.TempDir())
		img, err := Open(p, OpenOptions{BitmapMemoryLimit: 2048}) // b2 takes 1 KiB at 4 MiB
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		if err := img.Resize(16 << 20); !errors.Is(err, errBitmapMemory) || img.Size() != 4<<20 {
			t.Errorf("a grow past the bitmap memory cap: %v, size %d", err, img.Size())
		}
		if err := img.Resize(5 << 20); err != nil {
			t.Errorf("a grow within the cap: %v", err)
		}
	})
	t.Run("in-use", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		base := bitmapImage(t, dir)
		m := ccOpenImg(t, base)
		flags := m.h.Extensions.Bitmaps.DirectoryStart + bitmapEntFlags
		m.write(uint64(flags)+uint64(bitmapEntrySize("b0")), []byte{0, 0, 0, byte(bitmapFlagInUse)})
		ok, out := runOK("qemu-img", "resize", "-f", "qcow2", ccCopy(t, base, dir, "theirs.qcow2"), "8M")
		if ok {
			t.Fatalf("qemu-img resize with an in-use bitmap succeeded: %s", out)
		}
		img, err := Open(filepath.Join(dir, "b.qcow2"), OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer img.Close()
		err = img.Resize(8 << 20)
		if !errors.Is(err, ErrUnsupported) || "qemu-img: "+err.Error()+"\n" != out {
			t.Errorf("Resize: %v\nqemu-img: %s", err, out)
		}
	})
}
