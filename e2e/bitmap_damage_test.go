// Images whose persistent bitmaps QEMU refuses to load: qnbd refuses to serve them, read-only
// and read-write, with qemu-nbd's message and exit status, and writes nothing.
package e2e

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// bitmapDirOffsets reads the bitmaps extension of a qcow2 file: the file offset of its data
// (count, reserved, directory size, directory offset) and the directory's offset.
func bitmapDirOffsets(t *testing.T, b []byte) (ext, dir uint64) {
	t.Helper()
	for off := uint64(binary.BigEndian.Uint32(b[100:])); off+8 <= 65536; {
		typ, n := binary.BigEndian.Uint32(b[off:]), uint64(binary.BigEndian.Uint32(b[off+4:]))
		switch typ {
		case 0x23852875:
			return off + 8, binary.BigEndian.Uint64(b[off+8+16:])
		case 0:
			t.Fatal("no bitmaps extension")
		}
		off += 8 + (n+7)&^7
	}
	t.Fatal("no end of the header extensions")
	return 0, 0
}

// TestDamagedBitmapsRefusedLikeQemuNbd: a reserved flag in a directory entry, a reserved bit
// in a bitmap table entry, a table larger than the disk needs, and the bitmaps extension's own
// fields: its length, reserved word, a count of 0 or above the directory's entries, a
// directory offset unaligned or past the end of the file, a directory size of 0 or larger than
// its entries.
func TestDamagedBitmapsRefusedLikeQemuNbd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", base, "16M")
	run(t, "qemu-img", "bitmap", "--add", base, "b0")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 5 1M 64k", base)
	clean, err := os.ReadFile(base)
	if err != nil {
		t.Fatal(err)
	}
	ext, d := bitmapDirOffsets(t, clean)
	table := binary.BigEndian.Uint64(clean[d:])
	for _, c := range []struct {
		name string
		poke func(b []byte)
	}{
		{"entry-flag", func(b []byte) { b[d+12+2] |= 1 }},
		{"table-entry-reserved", func(b []byte) { b[table+7] |= 2 }},
		{"table-size", func(b []byte) { binary.BigEndian.PutUint32(b[d+8:], 2) }},
		{"ext-length", func(b []byte) { binary.BigEndian.PutUint32(b[ext-4:], 16) }},
		{"ext-reserved", func(b []byte) { binary.BigEndian.PutUint32(b[ext+4:], 1) }},
		{"ext-count-zero", func(b []byte) { binary.BigEndian.PutUint32(b[ext:], 0) }},
		{"ext-count-high", func(b []byte) { binary.BigEndian.PutUint32(b[ext:], 2) }},
		{"ext-dir-unaligned", func(b []byte) { binary.BigEndian.PutUint64(b[ext+16:], d+512) }},
		{"ext-dir-past-eof", func(b []byte) { binary.BigEndian.PutUint64(b[ext+16:], 1<<40) }},
		{"ext-dir-size-zero", func(b []byte) { binary.BigEndian.PutUint64(b[ext+8:], 0) }},
		{"ext-dir-size-large", func(b []byte) { binary.BigEndian.PutUint64(b[ext+8:], binary.BigEndian.Uint64(b[ext+8:])+8) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := bytes.Clone(clean)
			c.poke(b)
			img := filepath.Join(dir, c.name+".qcow2")
			if err := os.WriteFile(img, b, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, ro := range [][]string{{"-r"}, nil} {
				// Both servers listen before they open the image: a socket of their own.
				sock := filepath.Join(shortTempDir(t), "nbd.sock")
				args := append(append([]string{"-k", sock}, ro...), "-f", "qcow2", img)
				refusedLikeQemuNbd(t, "Failed to blk_new_open", args...)
			}
			if after, err := os.ReadFile(img); err != nil || !bytes.Equal(after, b) {
				t.Errorf("the refused image changed (%v)", err)
			}
		})
	}
}
