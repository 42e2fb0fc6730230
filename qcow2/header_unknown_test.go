// Unknown additional header fields (header_length past 112) survive every header rewrite, as
// QEMU keeps them (qcow2_update_header writes s->unknown_header_fields back).
package qcow2

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// unknownFieldsImage makes an image with a backing file whose header is 120 bytes long, bytes
// 112..119 being a field QEMU does not know; the extensions and the backing name move up.
func unknownFieldsImage(t *testing.T, dir, name string) (string, []byte) {
	t.Helper()
	engCreate(t, dir, "base.qcow2", "", "1M")
	p := engCreate(t, dir, name, "backing_file=base.qcow2,backing_fmt=qcow2,lazy_refcounts=on", "1M")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	const cs = 65536
	c0 := make([]byte, cs)
	copy(c0, b[:headerV3Length])
	binary.BigEndian.PutUint32(c0[offHeaderLength:], headerV3Length+8)
	field := []byte{0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7}
	copy(c0[headerV3Length:], field)
	copy(c0[headerV3Length+8:], b[headerV3Length:cs-8])
	bfo := binary.BigEndian.Uint64(c0[offBackingFileOffset:])
	binary.BigEndian.PutUint64(c0[offBackingFileOffset:], bfo+8)
	copy(b, c0)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// QEMU opens it and keeps the field.
	engQemu(t, "qemu-img", "info", p)
	return p, field
}

func headerBytes(t *testing.T, path string, n int) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b[:n]
}

// TestUnknownHeaderFieldsKept: a rebase (a whole first-cluster rewrite, EncodeCluster0) leaves
// the first cluster exactly as qemu-img rebase -u leaves it, unknown field included; and the
// engine's own header updates (dirty bit with lazy refcounts, L1 growth and size by resize,
// clean close) keep the field, as QEMU's resize does.
func TestUnknownHeaderFieldsKept(t *testing.T) {
	dir := t.TempDir()
	p, field := unknownFieldsImage(t, dir, "u.qcow2")
	theirs := filepath.Join(dir, "theirs.qcow2")
	ours := filepath.Join(dir, "ours.qcow2")
	for _, q := range []string{theirs, ours} {
		engQemu(t, "cp", p, q)
	}

	engCreate(t, dir, "other.qcow2", "", "1M")
	engQemu(t, "qemu-img", "rebase", "-u", "-b", "other.qcow2", "-F", "qcow2", theirs)
	s, err := OpenFile(ours, FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	h.BackingFile = "other.qcow2"
	c0, err := h.EncodeCluster0()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteAt(c0, 0); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if a, b := headerBytes(t, ours, 65536), headerBytes(t, theirs, 65536); !bytes.Equal(a, b) {
		t.Errorf("first cluster after rebase differs from qemu-img's:\n ours   %x\n theirs %x", a[96:160], b[96:160])
	}

	// Engine header updates; QEMU's resize for comparison.
	engQemu(t, "qemu-img", "resize", "-q", theirs, "3G")
	img, err := Open(ours, OpenOptions{NoBacking: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{7}, 4096), 0); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if hd, got := img.Header(), headerBytes(t, ours, 120); !hd.Dirty() || !bytes.Equal(got[112:120], field) {
		t.Errorf("after the first lazy-refcounts write: dirty %v, field %x", hd.Dirty(), got[112:120])
	}
	if err := img.Resize(3 << 30); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	got, want := headerBytes(t, ours, 120), headerBytes(t, theirs, 120)
	if !bytes.Equal(got[112:120], field) || !bytes.Equal(want[112:120], field) {
		t.Errorf("unknown field after resize and close: ours %x, QEMU %x, want %x", got[112:120], want[112:120], field)
	}
	if hl := binary.BigEndian.Uint32(got[offHeaderLength:]); hl != 120 {
		t.Errorf("header_length %d, want 120", hl)
	}
	corpus.RequireClean(t, ours)
	engQemu(t, "qemu-io", "-r", "-f", "qcow2", "-c", "read -P 7 0 4k", "-c", "read -P 0 4k 60k", "-c", "read -P 0 2G 64k", ours)
}
