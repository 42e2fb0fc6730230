// L2 entries are validated on use: one that points into metadata, is unaligned, has reserved
// bits set or points past the end of the file fails the request and marks the image corrupt.
package qcow2

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// engRawImage gives raw access to an image file for corrupting it.
type engRawImage struct {
	t *testing.T
	f *os.File
	h *Header
}

func (r *engRawImage) u64(off uint64) uint64 {
	var b [8]byte
	if _, err := r.f.ReadAt(b[:], int64(off)); err != nil {
		r.t.Fatal(err)
	}
	return binary.BigEndian.Uint64(b[:])
}

func (r *engRawImage) put(off, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	if _, err := r.f.WriteAt(b[:], int64(off)); err != nil {
		r.t.Fatal(err)
	}
}

// l2EntryOff is the file offset of guest cluster gc's L2 entry (its table must exist).
func (r *engRawImage) l2EntryOff(gc uint64) uint64 {
	g := r.h.Geometry()
	l1e := r.u64(uint64(r.h.L1TableOffset) + (gc>>g.l2Bits())*8)
	return l1e&l1OffsetMask + (gc&(g.l2Entries()-1))*g.l2EntrySize()
}

func (r *engRawImage) headerIncompat() uint64 { return r.u64(offIncompatibleFeatures) }

func engOpenRaw(t *testing.T, p string) *engRawImage {
	h, err := readHeaderFile(t, p)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &engRawImage{t, f, h}
}

// TestBadL2EntryFailsAndMarksCorrupt: an L2 entry pointing into metadata, or with reserved
// bits, fails the request with an error matching ErrCorrupt and EIO, sets the corrupt bit,
// refuses further writes; a read-write open of the marked image is refused, a read-only open
// works.
func TestBadL2EntryFailsAndMarksCorrupt(t *testing.T) {
	for _, c := range []struct {
		name   string
		mangle func(r *engRawImage) uint64 // returns the bad guest offset
	}{
		{"points-at-L1", func(r *engRawImage) uint64 {
			r.put(r.l2EntryOff(1), uint64(r.h.L1TableOffset)|entryCopied)
			return 1 << 16
		}},
		{"points-at-reftable", func(r *engRawImage) uint64 {
			r.put(r.l2EntryOff(2), uint64(r.h.RefTableOffset)|entryCopied)
			return 2 << 16
		}},
		{"unaligned", func(r *engRawImage) uint64 {
			r.put(r.l2EntryOff(2), r.u64(r.l2EntryOff(0))|1<<9)
			return 2 << 16
		}},
		{"reserved-bits", func(r *engRawImage) uint64 {
			r.put(r.l2EntryOff(3), r.u64(r.l2EntryOff(0))|1<<60)
			return 3 << 16
		}},
		{"past-eof", func(r *engRawImage) uint64 {
			r.put(r.l2EntryOff(1), 1<<40|entryCopied)
			return 1 << 16
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := engCreate(t, dir, "c.qcow2", "", "4M")
			engQemu(t, "qemu-io", "-c", "write -P 1 0 64k", p)
			r := engOpenRaw(t, p)
			bad := c.mangle(r)
			img, err := Open(p, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 512)
			_, err = img.ReadAt(buf, int64(bad))
			if !errors.Is(err, ErrCorrupt) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("read of the bad cluster: %v, want ErrCorrupt and EIO", err)
			}
			if r.headerIncompat()&incompatCorrupt == 0 {
				t.Fatal("corrupt bit not set on disk")
			}
			if _, err := img.WriteAt(buf, 1<<20); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("write after corruption: %v, want ErrCorrupt", err)
			}
			img.Close()
			if _, err := Open(p, OpenOptions{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "read-only") {
				t.Fatalf("read-write open of a corrupt image: %v", err)
			}
			ro, err := Open(p, OpenOptions{ReadOnly: true})
			if err != nil {
				t.Fatalf("read-only open of a corrupt image: %v", err)
			}
			defer ro.Close()
			if _, err := ro.ReadAt(buf, 0); err != nil || buf[0] != 1 {
				t.Fatalf("read of a good cluster: %v", err)
			}
		})
	}
}
