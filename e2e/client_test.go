// libnbd client helpers: connecting handles to a server, test data, block-status extents.
package e2e

import (
	"fmt"
	"testing"

	"github.com/qnbd/qnbd/e2e/libnbd"
	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// connect opens a libnbd handle on export name of s, applies setup (may be nil) before
// connecting, and closes the handle at the end of the test (before the server stops).
func connect(t *testing.T, s *server, name string, setup func(h *libnbd.Handle) error) *libnbd.Handle {
	t.Helper()
	h, err := libnbd.Create()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if setup != nil {
		if err := setup(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.ConnectURI(s.URI(name)); err != nil {
		t.Fatalf("connect %s: %v\nserver output:\n%s", s.URI(name), err, s.Output())
	}
	return h
}

// withContexts is a setup that requests the given meta contexts.
func withContexts(names ...string) func(h *libnbd.Handle) error {
	return func(h *libnbd.Handle) error {
		for _, n := range names {
			if err := h.AddMetaContext(n); err != nil {
				return err
			}
		}
		return nil
	}
}

// stamp returns n bytes of corpus.FillStamp(seed) for guest offset off: position-dependent,
// so data read from the wrong place or the wrong write does not match.
func stamp(seed byte, off int64, n int) []byte {
	p := make([]byte, n)
	corpus.FillStamp(seed, off, p)
	return p
}

// firstDiff is the index of the first differing byte of a and b, or -1.
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return n
	}
	return -1
}

// requireBytes fails the test when got differs from want, naming the first difference.
func requireBytes(t *testing.T, what string, off int64, got, want []byte) {
	t.Helper()
	if i := firstDiff(got, want); i >= 0 {
		g, w := byte(0), byte(0)
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		t.Errorf("%s: first difference at offset %d (+%d): got %#02x, want %#02x", what, off+int64(i), i, g, w)
	}
}

// extent is one run of a meta context's block status: [Off, Off+Len) with Flags.
type extent struct {
	Off, Len uint64
	Flags    uint32
}

func (e extent) String() string { return fmt.Sprintf("[%d+%d]=%d", e.Off, e.Len, e.Flags) }

// blockStatus walks block status of context ctx over the whole export and returns the
// extents with adjacent runs of equal flags merged (servers may split runs anywhere).
func blockStatus(t *testing.T, h *libnbd.Handle, ctx string) []extent {
	t.Helper()
	size, err := h.GetSize()
	if err != nil {
		t.Fatal(err)
	}
	var out []extent
	for off := uint64(0); off < uint64(size); {
		before := off
		count := min(uint64(size)-off, 1<<30)
		err := h.BlockStatus(count, off, 0, func(c string, start uint64, exts []libnbd.Extent) error {
			if c != ctx {
				return nil
			}
			if start != off {
				return fmt.Errorf("block status for %d started at %d", off, start)
			}
			for _, e := range exts {
				if e.Length == 0 {
					return fmt.Errorf("zero-length extent at %d", off)
				}
				n := min(uint64(e.Length), uint64(size)-off)
				out = appendExtent(out, extent{Off: off, Len: n, Flags: e.Flags})
				off += n
			}
			return nil
		})
		if err != nil {
			t.Fatalf("block status %s at %d: %v", ctx, before, err)
		}
		if off == before {
			t.Fatalf("block status %s at %d made no progress", ctx, off)
		}
	}
	return out
}

// appendExtent appends e, merging it into the last extent when their flags are equal.
func appendExtent(out []extent, e extent) []extent {
	if n := len(out); n > 0 && out[n-1].Flags == e.Flags && out[n-1].Off+out[n-1].Len == e.Off {
		out[n-1].Len += e.Len
		return out
	}
	return append(out, e)
}

// flagsAt returns the flags of the extent containing off.
func flagsAt(exts []extent, off uint64) uint32 {
	for _, e := range exts {
		if off >= e.Off && off < e.Off+e.Len {
			return e.Flags
		}
	}
	return ^uint32(0)
}
