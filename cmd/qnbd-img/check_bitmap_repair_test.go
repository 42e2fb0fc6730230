package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/qcow2"
)

// repairBitmapImage makes dir/base.qcow2 (1G, an enabled b0 at 64k and b1 at 512 bytes, both
// dirty; b1's table has 4 entries, two naming data clusters) and returns its bytes, the file
// offset of the bitmaps extension's data and of b1's directory entry and table.
func repairBitmapImage(t *testing.T, dir string) (b []byte, ext, entry1, table1 uint64) {
	t.Helper()
	sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "base.qcow2", "1G")
	sh(t, dir, "qemu-img", "bitmap", "--add", "base.qcow2", "b0")
	sh(t, dir, "qemu-img", "bitmap", "--add", "-g", "512", "base.qcow2", "b1")
	qemuIO(t, dir, "base.qcow2", "write 0 1M", "write 600M 64k")
	b, err := os.ReadFile(filepath.Join(dir, "base.qcow2"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := qcow2.DecodeHeader(b[:65536], uint64(len(b)))
	if err != nil || h.Extensions.Bitmaps == nil {
		t.Fatalf("base image: %v", err)
	}
	for off := uint64(h.HeaderLength); off+8 <= 65536; {
		typ, n := binary.BigEndian.Uint32(b[off:]), uint64(binary.BigEndian.Uint32(b[off+4:]))
		if typ == 0x23852875 {
			ext = off + 8
			break
		}
		off += 8 + (n+7)&^7
	}
	entry1 = uint64(h.Extensions.Bitmaps.DirectoryStart) + 32 // b0's entry: 24 bytes and "b0", padded
	table1 = binary.BigEndian.Uint64(b[entry1:])
	if ext == 0 || binary.BigEndian.Uint32(b[entry1+8:]) != 4 || binary.BigEndian.Uint64(b[table1:]) == 0 {
		t.Fatalf("unexpected layout: extension at %d, b1's table at %#x", ext, table1)
	}
	return b, ext, entry1, table1
}

// TestCheckRepairStoresBitmapsLikeQemu: qnbd-img check -r leaks / -r all on copies of images
// whose bitmaps are damaged in ways the repair's bitmap store mends (a table or a data cluster
// past the end of the file, a data cluster named twice), on a sound one, and on one whose
// extension the autoclear bit disowns: the same stdout, stderr ("qcow2_free_clusters failed"
// lines of the store at close included) and exit status as qemu-img, then the same verdict of
// qemu-img check, the same bitmaps (qemu-img info) and the same dirty bits (qemu-nbd -B).
//
// A data cluster named past what the refcount table covers cannot be freed either: both print
// "qcow2_free_clusters failed: File too large". QEMU's failed attempt to grow the refcount
// table for it has two more effects that qnbd-img, which attempts nothing, does not have
// (docs/bitmaps.md): a last stderr line "Failed to flush the refcount block cache: File too
// large", and leaked clusters; qnbd-img's image is clean afterwards, with qemu-img's bitmaps.
func TestCheckRepairStoresBitmapsLikeQemu(t *testing.T) {
	t.Parallel()
	base, _, entry1, table1 := repairBitmapImage(t, t.TempDir())
	put := func(b []byte, off, v uint64) { binary.BigEndian.PutUint64(b[off:], v) }
	cases := []struct {
		name  string
		modes []string
		fn    func(b []byte)
	}{
		{"sound", []string{"leaks", "all"}, func([]byte) {}},
		{"table-past-eof", []string{"leaks"}, func(b []byte) { put(b, entry1, 1<<40) }},
		{"entry-past-eof", []string{"leaks", "all"}, func(b []byte) { put(b, table1, 1<<30) }},
		{"entry-shared", []string{"leaks", "all"}, func(b []byte) { put(b, table1+16, binary.BigEndian.Uint64(b[table1:])) }},
		{"autoclear-off", []string{"leaks"}, func(b []byte) { put(b, 88, 0) }},
		{"entry-past-reftable", []string{"leaks"}, func(b []byte) { put(b, table1, 1<<44) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := append([]byte(nil), base...)
			c.fn(b)
			for _, mode := range c.modes {
				dir := t.TempDir()
				img := write(t, dir, "img.qcow2", b)
				want, got := onCopies(t, dir, img, "check", "-r", mode)
				if c.name == "entry-past-reftable" {
					const flush = "qemu-img: Failed to flush the refcount block cache: File too large\n"
					if !strings.HasSuffix(want.stderr, flush) || !strings.Contains(got.stderr, "qcow2_free_clusters failed: File too large\n") {
						t.Errorf("stderr not as documented:\nqemu-img: %v\nqnbd-img: %v", want, got)
					}
					want.stderr = strings.TrimSuffix(want.stderr, flush)
				}
				if want != got {
					t.Errorf("check -r %s:\nqemu-img: %v\nqnbd-img: %v", mode, want, got)
				}
				if c.name == "entry-past-reftable" {
					if r := qemu(t, dir, "check", "o.qcow2"); r.code != 0 {
						t.Errorf("qnbd-img's repaired image: %v", r)
					}
					wi, gi := qemu(t, dir, "info", "--output=json", "q.qcow2"), qemu(t, dir, "info", "--output=json", "o.qcow2")
					if infoBody(jsonBody(wi.stdout)) != infoBody(jsonBody(gi.stdout)) {
						t.Errorf("info differs:\n%s\nvs\n%s", wi.stdout, gi.stdout)
					}
					continue
				}
				sameBitmaps(t, dir, "q.qcow2", "o.qcow2", "")
			}
		})
	}
}
