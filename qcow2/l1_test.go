// The active L1 table (l1.go): an entry is validated when a request uses it.
package qcow2

import (
	"errors"
	"syscall"
	"testing"
)

// TestUnalignedL1EntryFailsAndMarksCorrupt: an L1 entry whose L2 table offset is not aligned
// to a cluster fails the request that uses it with an error matching ErrCorrupt and EIO and
// sets the corrupt bit on disk; a request through the other, good entry still reads before
// that, and writes are refused after it. Measured on qemu-io 7.2 with the same image: the read
// at 0 succeeds, the read at 512M fails with EIO ("L2 table offset 0x60200 unaligned (L1
// index: 0x1)") and qemu-img info then shows corrupt: true.
//
// QEMU 7.2 checks nothing else of an L1 entry on a read: reserved bits are masked off, and an
// L2 table past the end of the file or on the reftable is read as one (no error, no corrupt
// bit). The engine refuses those too (l1.go l2For); that difference is not asserted here.
func TestUnalignedL1EntryFailsAndMarksCorrupt(t *testing.T) {
	const second = 512 << 20 // the guest range of L1 entry 1 (64 KiB clusters)
	dir := t.TempDir()
	p := engCreate(t, dir, "c.qcow2", "", "1G")
	engQemu(t, "qemu-io", "-c", "write -P 1 0 64k", "-c", "write -P 2 512M 64k", p)
	r := engOpenRaw(t, p)
	entry1 := uint64(r.h.L1TableOffset) + 8
	r.put(entry1, r.u64(entry1)|1<<9)
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	buf := make([]byte, 512)
	if _, err := img.ReadAt(buf, 0); err != nil || buf[0] != 1 {
		t.Fatalf("read through the good L1 entry: %v, byte %#x", err, buf[0])
	}
	_, err = img.ReadAt(buf, second)
	if !errors.Is(err, ErrCorrupt) || !errors.Is(err, syscall.EIO) {
		t.Fatalf("read through the unaligned L1 entry: %v, want ErrCorrupt and EIO", err)
	}
	if r.headerIncompat()&incompatCorrupt == 0 {
		t.Fatal("corrupt bit not set on disk")
	}
	if _, err := img.WriteAt(buf, 1<<20); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write after corruption: %v, want ErrCorrupt", err)
	}
}
