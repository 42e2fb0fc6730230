// Check, repair and open against qemu-img 7.2 on images whose persistent bitmaps are damaged:
// directory entries, bitmap tables, their entries and the refcounts of every bitmap cluster.
package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// bmLayout locates the bitmap structures of the test image: the bitmaps extension's data, the
// directory, and each entry with its table.
type bmLayout struct {
	ext, dir uint64
	entry    [2]uint64 // file offsets of the directory entries
	table    [2]uint64 // their bitmap tables
}

// bmBaseImage is a 1 GiB image with bitmap b0 (64 KiB granularity, a 1-entry table) and b1
// (512 bytes, a 4-entry table, two of them naming data clusters), both dirtied by qemu-io.
func bmBaseImage(t *testing.T) ([]byte, bmLayout) {
	t.Helper()
	dir := t.TempDir()
	img := engCreate(t, dir, "base.qcow2", "", "1G")
	engQemu(t, "qemu-img", "bitmap", "--add", img, "b0")
	engQemu(t, "qemu-img", "bitmap", "--add", "-g", "512", img, "b1")
	engQemu(t, "qemu-io", "-c", "write 0 1M", "-c", "write 600M 64k", img)
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	h, err := DecodeHeader(b[:65536], uint64(len(b)))
	if err != nil || h.Extensions.Bitmaps == nil {
		t.Fatalf("base image: %v", err)
	}
	var l bmLayout
	for off := uint64(h.HeaderLength); off+8 <= 65536; {
		typ, n := binary.BigEndian.Uint32(b[off:]), uint64(binary.BigEndian.Uint32(b[off+4:]))
		if typ == extBitmaps {
			l.ext = off + 8
			break
		}
		if typ == 0 {
			t.Fatal("no bitmaps extension")
		}
		off += 8 + pad8(n)
	}
	l.dir = uint64(h.Extensions.Bitmaps.DirectoryStart)
	l.entry = [2]uint64{l.dir, l.dir + bitmapEntrySize("b0")}
	for i, e := range l.entry {
		l.table[i] = binary.BigEndian.Uint64(b[e:])
	}
	if n := binary.BigEndian.Uint32(b[l.entry[1]+8:]); n != 4 || binary.BigEndian.Uint64(b[l.table[1]:]) == 0 {
		t.Fatalf("b1's table: %d entries, first %#x", n, binary.BigEndian.Uint64(b[l.table[1]:]))
	}
	return b, l
}

// bmDamage is one damage done to a copy of the base image.
type bmDamage struct {
	name string
	fn   func(m *ccImg, l bmLayout)
}

func bmDamages() []bmDamage {
	u32 := func(m *ccImg, off uint64, v uint32) {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], v)
		m.write(off, b[:])
	}
	te := func(m *ccImg, l bmLayout, i uint64) uint64 { return m.u64(l.table[1] + 8*i) }
	cl := func(m *ccImg, off uint64) hostCluster { return HostOffset(off).cluster(m.h.Geometry()) }
	inUse := func(m *ccImg, l bmLayout) { u32(m, l.entry[1]+bitmapEntFlags, bitmapFlagInUse|bitmapFlagAuto) }
	return []bmDamage{
		{"clean", func(*ccImg, bmLayout) {}},
		{"in-use", inUse},
		{"table-unaligned", func(m *ccImg, l bmLayout) { m.putU64(l.entry[1], l.table[1]+512) }},
		{"table-zero", func(m *ccImg, l bmLayout) { m.putU64(l.entry[1], 0) }},
		{"table-past-eof", func(m *ccImg, l bmLayout) { m.putU64(l.entry[1], 1<<40) }},
		{"table-size-zero", func(m *ccImg, l bmLayout) { u32(m, l.entry[1]+8, 0) }},
		{"table-size-large", func(m *ccImg, l bmLayout) { u32(m, l.entry[1]+8, 5) }},
		{"table-size-small", func(m *ccImg, l bmLayout) { u32(m, l.entry[1]+8, 3) }},
		{"table-size-small-in-use", func(m *ccImg, l bmLayout) { u32(m, l.entry[1]+8, 3); inUse(m, l) }},
		{"flags-reserved", func(m *ccImg, l bmLayout) { u32(m, l.entry[1]+bitmapEntFlags, bitmapFlagAuto|0x100) }},
		{"type", func(m *ccImg, l bmLayout) { m.write(l.entry[1]+16, []byte{2}) }},
		{"granularity-low", func(m *ccImg, l bmLayout) { m.write(l.entry[1]+17, []byte{8}) }},
		{"extra-data", func(m *ccImg, l bmLayout) { u32(m, l.entry[1]+bitmapEntExtra, 8) }},
		{"name-size", func(m *ccImg, l bmLayout) { m.write(l.entry[1]+bitmapEntNameSize, []byte{0xff, 0xff}) }},
		{"count-low", func(m *ccImg, l bmLayout) { u32(m, l.ext, 1) }},
		{"dir-size-small", func(m *ccImg, l bmLayout) { m.putU64(l.ext+8, 48) }},
		{"same-name", func(m *ccImg, l bmLayout) { m.write(l.entry[1]+bitmapDirEntryFixedSize, []byte("b0")) }},
		{"same-name-in-use", func(m *ccImg, l bmLayout) {
			m.write(l.entry[1]+bitmapDirEntryFixedSize, []byte("b0"))
			inUse(m, l)
		}},
		{"entry-reserved-low", func(m *ccImg, l bmLayout) { m.putU64(l.table[1], te(m, l, 0)|2) }},
		{"entry-reserved-high", func(m *ccImg, l bmLayout) { m.putU64(l.table[1], te(m, l, 0)|1<<60) }},
		{"entry-all-ones-with-offset", func(m *ccImg, l bmLayout) { m.putU64(l.table[1], te(m, l, 0)|1) }},
		{"entry-all-ones", func(m *ccImg, l bmLayout) { m.putU64(l.table[1]+8, 1) }},
		{"entry-unaligned", func(m *ccImg, l bmLayout) { m.putU64(l.table[1], te(m, l, 0)+512) }},
		{"entry-reserved-in-use", func(m *ccImg, l bmLayout) { m.putU64(l.table[1], te(m, l, 0)|2); inUse(m, l) }},
		{"entry-past-eof", func(m *ccImg, l bmLayout) { m.putU64(l.table[1], 1<<30) }},
		{"entry-past-eof-in-use", func(m *ccImg, l bmLayout) { m.putU64(l.table[1], 1<<30); inUse(m, l) }},
		{"entry-shared", func(m *ccImg, l bmLayout) { m.putU64(l.table[1]+16, te(m, l, 0)) }},
		{"entry-shared-across", func(m *ccImg, l bmLayout) { m.putU64(l.table[0], te(m, l, 0)) }},
		{"data-refcount-0", func(m *ccImg, l bmLayout) { m.setRefcount(cl(m, te(m, l, 0)), 0) }},
		{"data-refcount-2", func(m *ccImg, l bmLayout) { m.setRefcount(cl(m, te(m, l, 0)), 2) }},
		{"table-refcount-0", func(m *ccImg, l bmLayout) { m.setRefcount(cl(m, l.table[1]), 0) }},
		{"table-refcount-2", func(m *ccImg, l bmLayout) { m.setRefcount(cl(m, l.table[1]), 2) }},
		{"dir-refcount-0", func(m *ccImg, l bmLayout) { m.setRefcount(cl(m, l.dir), 0) }},
		{"dir-refcount-2", func(m *ccImg, l bmLayout) { m.setRefcount(cl(m, l.dir), 2) }},
		{"autoclear-off", func(m *ccImg, l bmLayout) { m.putU64(offAutoclearFeatures, 0) }},
	}
}

// bmQemuNoise drops from qemu-img's stderr the open's warning about a cleared autoclear bit,
// which qnbd-img check prints, not the engine (docs/bitmaps.md), and, after a repair that
// failed, what QEMU's store at close adds: the engine does not store bitmaps into an image
// whose refcounts a failed check could not vouch for (check_bitmap_store.go).
func bmQemuNoise(s string, failed bool) string {
	var keep []string
	for _, line := range strings.SplitAfter(s, "\n") {
		switch {
		case failed && strings.Contains(line, "Lost persistent bitmaps"),
			failed && strings.HasPrefix(line, "qcow2: Marking image as corrupt"),
			strings.Contains(line, "a program lacking bitmap support"):
			continue
		}
		keep = append(keep, strings.TrimPrefix(line, "Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix."))
	}
	return strings.Join(keep, "")
}

// TestCheckBitmapDamageMatchesQemu: on every damaged bitmap image, Check, RepairLeaks and
// RepairAll against qemu-img check, -r leaks and -r all on copies. What qemu-img cannot open
// (its bitmap load refuses the image) Check refuses with QEMU's words, read-only and read-write
// Open refuse it too, and nothing is written. Otherwise exit status, counters and messages
// agree, with the "qcow2_free_clusters failed" lines of the bitmaps' store at close; afterwards
// qemu-img check gives the same verdict on both images and both have the same bitmaps, flags
// and dirty bits (bmCompareAfterRepair). In-use bitmaps pass silently, as in QEMU.
func TestCheckBitmapDamageMatchesQemu(t *testing.T) {
	t.Parallel()
	base, l := bmBaseImage(t)
	var mu sync.Mutex
	seen := map[string]bool{}
	for _, d := range bmDamages() {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "t.qcow2")
			if err := os.WriteFile(img, base, 0o644); err != nil {
				t.Fatal(err)
			}
			d.fn(ccOpenImg(t, img), l)
			orig, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			q := corpus.QemuCheck(t, img, corpus.CheckOptions{})
			q.Stderr = bmQemuNoise(q.Stderr, false)
			verdict := map[bool]string{true: "open-refused", false: "checked"}[strings.Contains(q.Stderr, "Could not open")]
			mu.Lock()
			seen[verdict] = true
			seen[map[int]string{0: "clean", 1: "failed", 2: "corrupt", 3: "leaks"}[q.ExitCode]] = true
			mu.Unlock()
			if verdict == "open-refused" {
				bmCompareRefusal(t, img, orig, q)
				return
			}
			res, err := Check(img, RepairNone)
			ccCompareCheck(t, res, err, q)
			if q.ExitCode == 0 || q.ExitCode == 1 {
				return // nothing to repair, or a check that fails before any repair
			}
			for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
				theirs := ccCopy(t, img, dir, "theirs-"+mode.String()+".qcow2")
				ours := ccCopy(t, img, dir, "ours-"+mode.String()+".qcow2")
				q := corpus.QemuCheck(t, theirs, corpus.CheckOptions{Repair: mode.String()})
				q.Stderr = bmQemuNoise(q.Stderr, q.ExitCode == 1)
				res, err := Check(ours, mode)
				if errors.Is(err, errNeedRebuild) {
					err = fmt.Errorf("%w: %w", err, syscall.EIO) // qemu-img's errno for it
				}
				if res != nil {
					all := *res
					all.Messages = append(append([]string(nil), res.Messages...), res.CloseMessages...)
					res = &all
				}
				ccCompareCheck(t, res, err, q)
				bmCompareAfterRepair(t, mode, img, ours, theirs, q.ExitCode == 1)
			}
		})
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, v := range []string{"open-refused", "checked", "clean", "failed", "corrupt", "leaks"} {
			if !seen[v] {
				t.Errorf("no damage got the verdict %q: the comparison proves little (%v)", v, seen)
			}
		}
	})
}

// bmCompareRefusal requires an image that qemu-img check cannot open to be refused by Check
// (every mode) and by Open (read-only, read-write, with bitmaps read) with QEMU's text, and
// left as it was.
func bmCompareRefusal(t *testing.T, img string, orig []byte, q *corpus.CheckResult) {
	t.Helper()
	_, want, _ := strings.Cut(strings.TrimSpace(q.Stderr), "': ")
	for _, mode := range []RepairMode{RepairNone, RepairLeaks, RepairAll} {
		res, err := Check(img, mode)
		var be *BitmapOpenError
		if !errors.As(err, &be) || !errors.Is(err, ErrFormat) || res != nil {
			t.Fatalf("Check %v: %v %+v; qemu-img: %s", mode, err, res, q.Stderr)
		}
		if be.Error() != want {
			t.Errorf("Check %v: %q, qemu-img %q", mode, be.Error(), want)
		}
	}
	for _, o := range []OpenOptions{{ReadOnly: true}, {ReadOnly: true, ReadBitmaps: true}, {}} {
		im, err := Open(img, o)
		if err == nil {
			im.Close()
			t.Fatalf("Open %+v succeeded; qemu-img: %s", o, q.Stderr)
		}
		if err.Error() != want {
			t.Errorf("Open %+v: %q, qemu-img %q", o, err.Error(), want)
		}
	}
	if b, err := os.ReadFile(img); err != nil || !bytes.Equal(b, orig) {
		t.Errorf("a refused image changed (%v)", err)
	}
}
