// An overlay without a backing format has its backing file probed through internal/probe, as
// QEMU probes it: a raw file is read as raw, a file in another format is refused rather than
// read as raw bytes (docs/probing.md).
package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dropBackingFormat turns the backing format extension of the image at p into an unknown
// extension, which QEMU and the engine skip, so that the backing file gets probed.
func dropBackingFormat(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var magic [4]byte
	binary.BigEndian.PutUint32(magic[:], extBackingFormat)
	i := bytes.Index(b[:4096], magic[:])
	if i < 0 {
		t.Fatal("no backing format extension")
	}
	binary.BigEndian.PutUint32(b[i:], 0x7e57e57e)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestProbedBackingFile(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.raw")
	data := bytes.Repeat([]byte("base"), 256)
	if err := os.WriteFile(base, append(data, make([]byte, 1<<20-len(data))...), 0o644); err != nil {
		t.Fatal(err)
	}
	vmdk := filepath.Join(dir, "base.vmdk")
	qemuImgOutput(t, "create", "-q", "-f", "vmdk", vmdk, "1M")
	for _, tt := range []struct{ backing, refuse string }{{base, ""}, {vmdk, "vmdk"}} {
		ov := filepath.Join(dir, "ov.qcow2")
		os.Remove(ov)
		qemuImgOutput(t, "create", "-q", "-f", "qcow2", "-u", "-b", tt.backing, "-F", "raw", ov, "1M")
		dropBackingFormat(t, ov)
		img, err := Open(ov, OpenOptions{ReadOnly: true})
		if tt.refuse != "" {
			if err == nil || !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), tt.refuse) {
				t.Errorf("backing file %s: Open = %v, want ErrUnsupported naming %s", tt.backing, err, tt.refuse)
			}
			if img != nil {
				img.Close()
			}
			continue
		}
		if err != nil {
			t.Fatalf("raw backing file probed: %v", err)
		}
		got := make([]byte, len(data))
		if _, err := img.ReadAt(got, 0); err != nil || !bytes.Equal(got, data) {
			t.Errorf("read through a probed raw backing file: %v", err)
		}
		img.Close()
	}
}
