// Unit tests of the format-neutral layer: probing, the raw disk, block-status refinements.
package imgfmt

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestProbeBytes(t *testing.T) {
	qcow2v3 := []byte("QFI\xfb\x00\x00\x00\x03")
	tests := []struct {
		b       []byte
		want    Format
		foreign string
	}{
		{nil, Raw, ""},
		{[]byte("QFI"), Raw, ""},
		{qcow2v3, Qcow2, ""},
		{[]byte("QFI\xfb\x00\x00\x00\x01"), "", "qcow"},
		{[]byte("KDMV...."), "", "vmdk"},
		{[]byte("conectix"), "", "vpc"},
		{append(make([]byte, 0x40), 0x7f, 0x10, 0xda, 0xbe), "", "vdi"},
		{bytes.Repeat([]byte{0}, 4096), Raw, ""},
	}
	for _, tt := range tests {
		got, err := ProbeBytes(tt.b)
		var ue *UnsupportedFormatError
		switch {
		case tt.foreign != "":
			if !errors.As(err, &ue) || ue.Name != tt.foreign {
				t.Errorf("ProbeBytes(%q) = %v, %v; want unsupported %s", tt.b, got, err, tt.foreign)
			}
		case err != nil || got != tt.want:
			t.Errorf("ProbeBytes(%q) = %v, %v; want %v", tt.b, got, err, tt.want)
		}
	}
}

func TestFullBackingFilename(t *testing.T) {
	for _, tt := range []struct{ image, backing, want string }{
		{"c.qcow2", "a.qcow2", "a.qcow2"},
		{"sub/c.qcow2", "../a.qcow2", "sub/../a.qcow2"},
		{"/x/y/c.qcow2", "a.qcow2", "/x/y/a.qcow2"},
		{"sub/c.qcow2", "/abs/a.qcow2", "/abs/a.qcow2"},
		{"sub/c.qcow2", "nbd://host/x", "nbd://host/x"},
	} {
		if got := FullBackingFilename(tt.image, tt.backing); got != tt.want {
			t.Errorf("FullBackingFilename(%q, %q) = %q, want %q", tt.image, tt.backing, got, tt.want)
		}
	}
}

func TestRawDisk(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.raw")
	if err := CreateRaw(p, 1000, PreallocOff); err != nil {
		t.Fatal(err)
	}
	d, err := Open(p, OpenOptions{Format: Raw})
	if err != nil {
		t.Fatal(err)
	}
	if d.Size() != 1024 {
		t.Fatalf("size %d, want 1000 rounded up to 1024", d.Size())
	}
	if _, err := d.WriteAt([]byte("hello"), 1019); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := d.ReadAt(buf, 1016); err != nil || string(buf) != "\x00\x00\x00hello" {
		t.Fatalf("read back %q, %v", buf, err)
	}
	if _, err := d.ReadAt(buf, 1020); err == nil {
		t.Error("read past the end succeeded")
	}
	if _, err := d.WriteAt(buf, 1020); err == nil {
		t.Error("write past the end succeeded")
	}
	if err := d.Resize(1<<20, PreallocOff); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteZeroes(0, 1024); err != nil {
		t.Fatal(err)
	}
	ext, err := d.Map(0, d.Size())
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for i, e := range ext {
		if e.Start != total || e.Kind == KindUnallocated || !e.HasOffset || e.Offset != e.Start {
			t.Errorf("extent %d: %+v", i, e)
		}
		total += e.Length
	}
	if total != 1<<20 {
		t.Errorf("map covers %d bytes", total)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// A raw image that was only probed must not be given a qcow2 header (nor any other format's:
// internal/probe's tests cover the set); with -f raw it may.
func TestProbedRawRefusesQcow2Header(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d.raw")
	if err := CreateRaw(p, 1<<20, PreallocOff); err != nil {
		t.Fatal(err)
	}
	hdr := []byte("QFI\xfb\x00\x00\x00\x03")
	d, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.WriteAt(hdr, 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("probed raw: header write = %v, want EPERM", err)
	}
	// QEMU probes a qcow2 magic as qcow2 only with a version of 2 or more: set the version
	// first, then complete the magic in two writes.
	if _, err := d.WriteAt([]byte("\xfb\x00\x00\x00\x03"), 3); err != nil {
		t.Errorf("a write that does not complete the magic: %v", err)
	}
	if _, err := d.WriteAt([]byte("QFI"), 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("completing the magic with a second write: %v, want EPERM", err)
	}
	if _, err := d.WriteAt(hdr, 512); err != nil {
		t.Errorf("magic elsewhere: %v", err)
	}
	d.Close()
	d, err = Open(p, OpenOptions{Format: Raw})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.WriteAt(hdr, 0); err != nil {
		t.Errorf("explicit raw: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "d.raw")
	if err := CreateRaw(raw, 1<<20, PreallocOff); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(raw, OpenOptions{Format: Qcow2}); err != ErrNotQcow2 {
		t.Errorf("qcow2 on raw: %v", err)
	}
	if _, err := Open(dir, OpenOptions{}); err == nil || err.Error() != "'file' driver requires '"+dir+"' to be a regular file" {
		t.Errorf("directory: %v", err)
	}
	var pe *os.PathError
	if _, err := Open(filepath.Join(dir, "missing"), OpenOptions{}); !errors.As(err, &pe) {
		t.Errorf("missing file: %v", err)
	}
	if _, err := Open(raw, OpenOptions{Format: "vmdk"}); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("unknown format: %v", err)
	}
	if _, err := Check(raw, Raw, RepairNone, false, nil); !errors.Is(err, ErrNotSupported) || !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("check raw: %v", err)
	}
}
