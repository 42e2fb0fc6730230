// Refcounts (refcount.go): a reftable entry is checked before the refcount block it names is
// used, and a count never exceeds the image's refcount width.
package qcow2

import (
	"errors"
	"syscall"
	"testing"
)

// TestBadRefTableEntryFailsTheAllocatingWrite: a reftable entry with reserved bits, an
// unaligned offset, or a refcount block past the end of the file, on the reftable itself or
// on an active L2 table fails the first write that needs a refcount (an allocation) with an
// error matching ErrCorrupt and EIO, before anything is written through it; reads of
// allocated data still work.
func TestBadRefTableEntryFailsTheAllocatingWrite(t *testing.T) {
	for _, c := range []struct {
		name   string
		mangle func(r *engRawImage, e uint64) uint64
	}{
		{"reserved-bits", func(r *engRawImage, e uint64) uint64 { return e | 1<<3 }},
		{"unaligned", func(r *engRawImage, e uint64) uint64 { return e + 512 }},
		{"past-eof", func(r *engRawImage, e uint64) uint64 { return 1 << 40 }},
		{"on-reftable", func(r *engRawImage, e uint64) uint64 { return uint64(r.h.RefTableOffset) }},
		{"on-active-l2", func(r *engRawImage, e uint64) uint64 { return r.l2EntryOff(0) &^ (1<<16 - 1) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := engCreate(t, t.TempDir(), "c.qcow2", "", "64M")
			engQemu(t, "qemu-io", "-c", "write -P 1 0 64k", p)
			r := engOpenRaw(t, p)
			entry0 := uint64(r.h.RefTableOffset)
			r.put(entry0, c.mangle(r, r.u64(entry0)))
			img, err := Open(p, OpenOptions{})
			if err != nil {
				t.Fatalf("open: %v (the reftable is checked entry by entry, on use)", err)
			}
			defer img.Close()
			buf := make([]byte, 512)
			if _, err := img.ReadAt(buf, 0); err != nil || buf[0] != 1 {
				t.Fatalf("read of allocated data: %v, byte %#x", err, buf[0])
			}
			_, err = img.WriteAt(buf, 32<<20) // a new cluster: needs refcounts
			if !errors.Is(err, ErrCorrupt) || !errors.Is(err, syscall.EIO) {
				t.Fatalf("allocating write: %v, want ErrCorrupt and EIO", err)
			}
		})
	}
}

// TestSetRefcountRefusesOverflow: a count above what the image's refcount width holds is
// refused, and the stored count stays as it was.
func TestSetRefcountRefusesOverflow(t *testing.T) {
	p := engCreate(t, t.TempDir(), "c.qcow2", "refcount_bits=1", "64M")
	engQemu(t, "qemu-io", "-c", "write -P 1 0 64k", p)
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	hdr := hostCluster(0) // the header's cluster has refcount 1
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.alloc.setRefcount(hdr, 2); err == nil {
		t.Fatal("refcount 2 at 1 bit accepted")
	}
	if n, err := img.alloc.refcount(hdr); err != nil || n != 1 {
		t.Fatalf("header's refcount after the refused change: %d, %v; want 1", n, err)
	}
}
