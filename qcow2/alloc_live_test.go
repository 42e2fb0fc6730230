// The allocator never hands out a cluster that is in use, whatever its refcount on disk says.
package qcow2

import (
	"errors"
	"testing"
)

// TestAllocatorRefusesLiveCluster: an L2 table whose refcount was zeroed on disk is the first
// "free" cluster; the allocator must notice it is live (it is a cached L2 table) and mark the
// image corrupt instead of handing it out (cloud-hypervisor #8606).
func TestAllocatorRefusesLiveCluster(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "cluster_size=4k", "4M")
	engQemu(t, "qemu-io", "-c", "write -P 1 0 4k", p)
	r := engOpenRaw(t, p)
	l2Cluster := r.u64(uint64(r.h.L1TableOffset)) & l1OffsetMask >> 12
	rb := r.u64(uint64(r.h.RefTableOffset)) & reftableOffsetMask
	var zero [2]byte
	if _, err := r.f.WriteAt(zero[:], int64(rb+l2Cluster*2)); err != nil {
		t.Fatal(err)
	}
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	_, err = img.WriteAt(make([]byte, 4096), 8192)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("write: %v, want ErrCorrupt", err)
	}
	if r.headerIncompat()&incompatCorrupt == 0 {
		t.Fatal("corrupt bit not set")
	}
	got := make([]byte, 4096)
	if _, err := img.ReadAt(got, 0); err != nil || got[0] != 1 {
		t.Fatalf("the L2 table was damaged: %v", err)
	}
}
