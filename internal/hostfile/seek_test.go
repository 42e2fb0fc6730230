package hostfile

import (
	"errors"
	"testing"
)

// TestFindAllocationWalksDataAndHoles: a file with data at 1 MiB only, in a 4 MiB length,
// answers hole-then-data at 0, data-then-hole at 1 MiB, and no more data after it. (A file
// system without SEEK_DATA reports everything as data, which the first answer catches.)
func TestFindAllocationWalksDataAndHoles(t *testing.T) {
	h := create(t, 4<<20)
	if _, err := h.OS().WriteAt(make([]byte, 64<<10), 1<<20); err != nil {
		t.Fatal(err)
	}
	// Zeros written are still data to the file system.
	if _, err := h.OS().WriteAt([]byte{1}, 1<<20); err != nil {
		t.Fatal(err)
	}
	data, hole, err := h.FindAllocation(0)
	if err != nil || hole != 0 || data != 1<<20 {
		t.Fatalf("at 0: data %d hole %d (%v), want data at 1 MiB", data, hole, err)
	}
	data, hole, err = h.FindAllocation(1 << 20)
	if err != nil || data != 1<<20 || hole <= data || hole > 2<<20 {
		t.Fatalf("at 1 MiB: data %d hole %d (%v)", data, hole, err)
	}
	if _, _, err := h.FindAllocation(3 << 20); !errors.Is(err, ErrNoMoreData) {
		t.Fatalf("after the last data: %v, want ErrNoMoreData", err)
	}
	if _, err := h.SeekData(8 << 20); !errors.Is(err, ErrNoMoreData) {
		t.Fatalf("past the end: %v, want ErrNoMoreData", err)
	}
}
