// Persistent bitmaps when marking them in-use fails part way: the next write must not drop them.
package qcow2

import (
	"bytes"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// TestBitmapsInUseAfterFailedMark: markBitmapsInUse turns the bitmaps autoclear bit off on
// disk (header, sync), marks the directory in-use (sync), and prepareWrite's header write puts
// the bit back. When a write after the first one fails (the directory's, or that last header
// write), the first guest write fails; the next one must still end with the bit on and every
// bitmap in-use, as a successful first attempt does: qemu-img check exits 0 (a dropped bit
// leaves the bitmaps' clusters as leaks) and qemu-img info lists the bitmaps.
func TestBitmapsInUseAfterFailedMark(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "b.qcow2", "", "4M")
	engQemu(t, "qemu-img", "bitmap", "--add", p, "b0")
	engQemu(t, "qemu-io", "-c", "write -P 9 1M 64k", p)
	orig, err := memstore.FromFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(orig)
	if err != nil {
		t.Fatal(err)
	}
	if !h.bitmapsConsistent() {
		t.Fatal("setup: qemu-img left no consistent bitmaps")
	}
	dirOff := int64(h.Extensions.Bitmaps.DirectoryStart)
	cases := []struct {
		name  string
		match func(op memstore.Op) bool
		nth   int
	}{
		{"directory write", func(op memstore.Op) bool { return op.Off == dirOff }, 1},
		{"header write restoring the bit", func(op memstore.Op) bool { return op.Off == 0 }, 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := orig.Clone()
			img, err := OpenStorage(s, dir, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rule := &memstore.Rule{Kind: memstore.OpWrite, Nth: c.nth, Err: syscall.EIO, Match: c.match}
			s.Inject(rule)
			if _, err := img.WriteAt(bytes.Repeat([]byte{1}, 4096), 0); err == nil {
				t.Fatal("the first write succeeded although marking the bitmaps failed")
			}
			if rule.Seen() < c.nth {
				t.Fatalf("the fault never fired (%d matching writes)", rule.Seen())
			}
			s.Inject(nil)
			if _, err := img.WriteAt(bytes.Repeat([]byte{2}, 4096), 0); err != nil {
				t.Fatalf("the write after the fault: %v", err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "out.qcow2")
			if err := s.Reopen().WriteFile(out); err != nil {
				t.Fatal(err)
			}
			if code, msg := engQemuCheck(t, out); code != 0 {
				t.Errorf("qemu-img check exit %d:\n%s", code, msg)
			}
			bms := qemuBitmaps(t, out)
			if len(bms) != 1 {
				t.Fatalf("qemu-img info lists %d bitmaps, want 1: %v", len(bms), bms)
			}
			flags, _ := bms[0].(map[string]any)["flags"].([]any)
			inUse := false
			for _, f := range flags {
				inUse = inUse || f == "in-use"
			}
			if !inUse {
				t.Errorf("bitmap not in-use: %v", bms[0])
			}
		})
	}
}
