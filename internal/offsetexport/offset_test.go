package offsetexport

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/server"
)

// mem is a plain in-memory Backend without optional interfaces.
type mem struct{ b []byte }

func (m *mem) Size() uint64 { return uint64(len(m.b)) }
func (m *mem) ReadAt(_ context.Context, p []byte, off uint64) error {
	copy(p, m.b[off:])
	return nil
}
func (m *mem) WriteAt(_ context.Context, p []byte, off uint64, _ bool) error {
	copy(m.b[off:], p)
	return nil
}
func (m *mem) Flush(context.Context) error { return nil }

// TestSizeIsRestRoundedUpToSector checks qemu-nbd's sizes on a 16 MiB image (measured:
// -o 1048576 exports 15 MiB, -o 1000 exports 16776704 bytes, -o 16 MiB exports 0) and its
// refusal of an offset past the end.
func TestSizeIsRestRoundedUpToSector(t *testing.T) {
	inner := &mem{b: make([]byte, 16<<20)}
	for off, want := range map[uint64]uint64{1 << 20: 15 << 20, 1000: 16776704, 16 << 20: 0, 0: 16 << 20} {
		b, err := New(inner, off)
		if err != nil || b.Size() != want {
			t.Errorf("offset %d: size %v, %v; want %d", off, b, err, want)
		}
	}
	_, err := New(inner, 16<<20+1)
	if err == nil || err.Error() != "Offset (16777217) cannot be greater than size of the containing file (16777216)" {
		t.Errorf("offset past the end: %v", err)
	}
}

// TestWindowTranslatesAndGuardsTheTail checks that reads and writes land at offset+off, that
// the rounded tail reads as zeros and is a hole, and that changes reaching into it fail with
// ENOSPC and change nothing.
func TestWindowTranslatesAndGuardsTheTail(t *testing.T) {
	ctx := context.Background()
	inner := &mem{b: bytes.Repeat([]byte{7}, 4096)}
	b, err := New(inner, 1000) // 3096 bytes inside, exported as 3584
	if err != nil || b.Size() != 3584 {
		t.Fatalf("size %d, %v", b.Size(), err)
	}
	if err := b.WriteAt(ctx, []byte{1, 2}, 10, false); err != nil || inner.b[1010] != 1 || inner.b[1011] != 2 {
		t.Fatalf("write at 10 did not land at 1010: %v", err)
	}
	p := make([]byte, 600)
	for i := range p {
		p[i] = 0xff
	}
	if err := b.ReadAt(ctx, p, 3000); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p[:96], bytes.Repeat([]byte{7}, 96)) || !bytes.Equal(p[96:584], make([]byte, 488)) {
		t.Errorf("read across the end: %v", p)
	}
	before := bytes.Clone(inner.b)
	for name, err := range map[string]error{
		"write": b.WriteAt(ctx, make([]byte, 10), 3090, false),
		"zero":  b.WriteZeroes(ctx, 3000, 200, server.ZeroFlags{}),
		"trim":  b.Trim(ctx, 3500, 84, false),
	} {
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("%s into the tail: %v, want ENOSPC", name, err)
		}
	}
	if !bytes.Equal(before, inner.b) {
		t.Errorf("a refused change wrote")
	}
	if err := b.WriteZeroes(ctx, 0, 100, server.ZeroFlags{}); err != nil || inner.b[1000] != 0 || inner.b[1100] != 7 {
		t.Errorf("emulated write-zeroes: %v", err)
	}
	if err := b.WriteZeroes(ctx, 0, 100, server.ZeroFlags{FastZero: true}); !errors.Is(err, syscall.ENOTSUP) {
		t.Errorf("fast zero without a Zeroer: %v", err)
	}
	exts, err := b.Allocation(ctx, 3000, 584)
	if err != nil || len(exts) != 1 || exts[0] != (server.Extent{Length: 96}) {
		t.Errorf("status across the end: %v, %v", exts, err)
	}
	exts, err = b.Allocation(ctx, 3096, 488)
	if err != nil || len(exts) != 1 || exts[0] != (server.Extent{Length: 488, Flags: server.StateHole | server.StateZero}) {
		t.Errorf("status of the tail: %v, %v", exts, err)
	}
	exts, err = b.AllocationDepth(ctx, 3096, 488)
	if err != nil || exts[0].Flags != 0 {
		t.Errorf("depth of the tail: %v, %v", exts, err)
	}
}
