package main

import (
	"bytes"
	"compress/flate"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestBackupDataHasNoHolesAndDoesNotCompress: no 4 KiB block of the backup data is zero
// (nothing a server could report as a hole) and deflate cannot shrink it.
func TestBackupDataHasNoHolesAndDoesNotCompress(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r")
	const size = 256<<10 + 123
	if err := writeRandomFile(path, size); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) != size {
		t.Fatalf("read %d bytes, %v; want %d", len(b), err, size)
	}
	zero := make([]byte, 4096)
	for off := 0; off+4096 <= len(b); off += 4096 {
		if bytes.Equal(b[off:off+4096], zero) {
			t.Fatalf("block at %d is all zero", off)
		}
	}
	var z bytes.Buffer
	w, _ := flate.NewWriter(&z, flate.DefaultCompression)
	w.Write(b)
	w.Close()
	if z.Len() < len(b) {
		t.Errorf("deflate shrank %d bytes to %d", len(b), z.Len())
	}
}

// TestBackupQcow2IsFullyAllocated: qemu-img map reports the converted qcow2 as data from the
// first byte to the last, with the same contents as the raw file.
func TestBackupQcow2IsFullyAllocated(t *testing.T) {
	const size = 3 << 20
	imgs, err := makeBackupImages(context.Background(), t.TempDir(), size)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-img", "map", "-f", "qcow2", "--output=json", imgs.qcow2).Output()
	if err != nil {
		t.Fatal(err)
	}
	var extents []struct {
		Start, Length int64
		Data, Zero    bool
	}
	if err := json.Unmarshal(out, &extents); err != nil {
		t.Fatal(err)
	}
	var covered int64
	for _, e := range extents {
		if !e.Data || e.Zero {
			t.Errorf("extent %+v is not data", e)
		}
		covered += e.Length
	}
	if covered != size {
		t.Errorf("map covers %d bytes, want %d", covered, size)
	}
	if out, err := exec.Command("qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2", imgs.raw, imgs.qcow2).CombinedOutput(); err != nil {
		t.Errorf("qemu-img compare: %v: %s", err, out)
	}
}
