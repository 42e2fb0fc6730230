// Unit tests of the format-neutral layer: probing, the raw disk, block-status refinements.
package imgfmt

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
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

// A raw image that was only probed must not be given a qcow2 header; with -f raw it may.
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
	if _, err := d.WriteAt([]byte("\xfb"), 3); err != nil {
		t.Errorf("a byte that does not complete the magic: %v", err)
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
	if _, err := Check(raw, Raw, RepairNone, false); !errors.Is(err, ErrNotSupported) || !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("check raw: %v", err)
	}
}

func TestRefineExtents(t *testing.T) {
	layers := []Layer{
		{Filename: "top.qcow2", Format: Qcow2, Size: 3 << 20},
		{Filename: "mid.qcow2", Format: Qcow2, Size: 2 << 20},
		{Filename: "base.raw", Format: Raw, Size: 1 << 20},
	}
	in := []Extent{
		{Start: 0, Length: 4096, Kind: KindData, Depth: 2, HasOffset: true, Offset: 0, File: "base.raw"},
		{Start: 4096, Length: 2<<20 - 4096, Kind: KindZero, Depth: 2}, // raw hole, then past its end
		{Start: 2 << 20, Length: 1 << 20, Kind: KindZero, Depth: 1},   // past mid's end
	}
	noHoles := func(string, uint64, uint64, func(uint64, uint64, bool)) { t.Fatal("no recursion expected") }
	got := refineExtents(in, layers, false, noHoles)
	want := []Extent{
		in[0],
		{Start: 4096, Length: 1<<20 - 4096, Kind: KindZero, Depth: 2, HasOffset: true, Offset: 4096, File: "base.raw"},
		{Start: 1 << 20, Length: 1 << 20, Kind: KindUnallocated, Depth: 1},
		{Start: 2 << 20, Length: 1 << 20, Kind: KindUnallocated, Depth: 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("refineExtents:\n got %+v\nwant %+v", got, want)
	}
	// With metadata preallocation, data over host holes reads as known zeros.
	data := []Extent{{Start: 0, Length: 3 << 16, Kind: KindData, HasOffset: true, Offset: 1 << 16, File: "top.qcow2"}}
	holes := func(name string, off, n uint64, emit func(uint64, uint64, bool)) {
		emit(off, off+1<<16, false)
		emit(off+1<<16, off+n, true)
	}
	got = refineExtents(data, layers, true, holes)
	want = []Extent{
		{Start: 0, Length: 1 << 16, Kind: KindData, HasOffset: true, Offset: 1 << 16, File: "top.qcow2"},
		{Start: 1 << 16, Length: 2 << 16, Kind: KindData, KnownZero: true, HasOffset: true, Offset: 2 << 16, File: "top.qcow2"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("recursion:\n got %+v\nwant %+v", got, want)
	}
}

// QEMU's heuristic, judged on qemu-img-made images: a metadata-preallocated sparse image is
// detected, a plain one and a fully preallocated one are not.
func TestDetectMetadataPrealloc(t *testing.T) {
	dir := t.TempDir()
	for name, want := range map[string]bool{"off": false, "metadata": true, "full": false} {
		p := filepath.Join(dir, name+".qcow2")
		if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation="+name, p, "64M").CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		d, err := Open(p, OpenOptions{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if got := d.(*qcow2Disk).recurse; got != want {
			t.Errorf("preallocation=%s: detected %v, want %v", name, got, want)
		}
		d.Close()
	}
}
