package offsetexport

import (
	"bytes"
	"context"
	"testing"
)

func TestWindowExportsExactlyOffsetToOffsetPlusSize(t *testing.T) {
	inner := &mem{b: make([]byte, 1<<20)}
	for i := range inner.b {
		inner.b[i] = byte(i / 512)
	}
	w, err := NewWindow(inner, 4096, 8192)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != 8192 {
		t.Fatalf("size %d, want 8192", w.Size())
	}
	p := make([]byte, 8192)
	if err := w.ReadAt(context.Background(), p, 0); err != nil || !bytes.Equal(p, inner.b[4096:4096+8192]) {
		t.Fatalf("read %v: not inner's [4096, 12288)", err)
	}
	if err := w.WriteAt(context.Background(), []byte{1}, 8192, false); err == nil {
		t.Fatal("a write past the window's end succeeded")
	}
}

func TestWindowRefusedInQemuOrderAndWords(t *testing.T) {
	inner := &mem{b: make([]byte, 16<<20)}
	for _, tc := range []struct {
		off, size uint64
		want      string
	}{
		{100000000, 100000001, "Offset (100000000) cannot be greater than size of the containing file (16777216)"},
		{0, 100000001, "The sum of offset (0) and size (100000001) has to be smaller or equal to the  actual size of the containing file (16777216)"},
		{1048576, 1000, "Specified size is not multiple of 512"},
	} {
		_, err := NewWindow(inner, tc.off, tc.size)
		if err == nil || err.Error() != tc.want {
			t.Errorf("offset %d size %d: %v, want %q", tc.off, tc.size, err, tc.want)
		}
	}
}
