// Tests of the raw file backend on the test machine's filesystem (ext4 or tmpfs, both of
// which punch holes and report them through SEEK_HOLE).
package rawfile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/internal/hostfile"
	"github.com/qnbd/qnbd/server"
)

var ctx = context.Background()

const blk = 4096

func newFile(t *testing.T, size int64, o Options) (*File, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	f, err := Open(p, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, p
}

func alloc(t *testing.T, f *File, off, n uint64) string {
	t.Helper()
	ext, err := f.Allocation(ctx, off, n)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprint(ext)
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{filepath.Join(dir, "missing"), dir, "/dev/null"} {
		if f, err := Open(p, Options{}); err == nil {
			f.Close()
			t.Errorf("Open(%s) succeeded", p)
		}
	}
}

func TestReadWriteAndReadOnly(t *testing.T) {
	f, p := newFile(t, 1<<20, Options{})
	if f.Size() != 1<<20 {
		t.Fatalf("size %d", f.Size())
	}
	data := bytes.Repeat([]byte("qnbd"), 3000)
	if err := f.WriteAt(ctx, data, 777, true); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := f.ReadAt(ctx, got, 777); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Cache(ctx, 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	ro, err := Open(p, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if err := ro.WriteAt(ctx, []byte{1}, 0, false); !errors.Is(err, syscall.EROFS) {
		t.Errorf("read-only write: %v", err)
	}
	if err := ro.Trim(ctx, 0, blk, false); !errors.Is(err, syscall.EROFS) {
		t.Errorf("read-only trim: %v", err)
	}
	if err := ro.WriteZeroes(ctx, 0, blk, server.ZeroFlags{}); !errors.Is(err, syscall.EROFS) {
		t.Errorf("read-only zero: %v", err)
	}
	if err := ro.ReadAt(ctx, got, 777); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read-only read: %v", err)
	}
}

func TestShrunkFileReadsZeros(t *testing.T) {
	f, p := newFile(t, 3*blk, Options{})
	if err := f.WriteAt(ctx, bytes.Repeat([]byte{7}, 3*blk), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, blk); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2*blk)
	if err := f.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if got[blk-1] != 7 || !bytes.Equal(got[blk:], make([]byte, blk)) {
		t.Fatalf("past EOF not zero")
	}
}

func TestAllocationTrimAndZeroes(t *testing.T) {
	f, _ := newFile(t, 64*blk, Options{})
	hz := server.StateHole | server.StateZero
	if got, want := alloc(t, f, 0, 64*blk), fmt.Sprint([]server.Extent{{Length: 64 * blk, Flags: hz}}); got != want {
		t.Fatalf("empty file: %s, want %s", got, want)
	}
	if err := f.WriteAt(ctx, bytes.Repeat([]byte{1}, 8*blk), 8*blk, false); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprint([]server.Extent{{Length: 8 * blk, Flags: hz}, {Length: 8 * blk}, {Length: 48 * blk, Flags: hz}})
	if got := alloc(t, f, 0, 64*blk); got != want {
		t.Fatalf("after write: %s, want %s", got, want)
	}
	// A query starting inside data, ending inside a hole.
	want = fmt.Sprint([]server.Extent{{Length: 4 * blk}, {Length: 100, Flags: hz}})
	if got := alloc(t, f, 12*blk, 4*blk+100); got != want {
		t.Fatalf("partial: %s, want %s", got, want)
	}
	// Trim punches a hole that reads as zeros.
	if err := f.Trim(ctx, 9*blk, 2*blk, true); err != nil {
		t.Fatal(err)
	}
	want = fmt.Sprint([]server.Extent{{Length: blk}, {Length: 2 * blk, Flags: hz}, {Length: 5 * blk}})
	if got := alloc(t, f, 8*blk, 8*blk); got != want {
		t.Fatalf("after trim: %s, want %s", got, want)
	}
	// Zeroes with NO_HOLE keep the blocks allocated; without NO_HOLE they are freed. (ext4
	// may report a zeroed, still allocated range as a hole: it reads as zeros either way.)
	blocks := func() int64 {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		return st.Blocks
	}
	for _, tc := range []struct {
		base   uint64
		noHole bool
		freed  int64
	}{{32, true, 0}, {48, false, 2 * blk / 512}} {
		if err := f.WriteAt(ctx, bytes.Repeat([]byte{3}, 8*blk), tc.base*blk, true); err != nil {
			t.Fatal(err)
		}
		b0 := blocks()
		if err := f.WriteZeroes(ctx, (tc.base+2)*blk, 2*blk, server.ZeroFlags{NoHole: tc.noHole, FastZero: true, FUA: true}); err != nil {
			t.Fatal(err)
		}
		// Metadata blocks may come and go, so only the direction is checked.
		if b := blocks(); (tc.noHole && b < b0) || (!tc.noHole && b0-b < tc.freed) {
			t.Errorf("zeroes NoHole=%v: %d -> %d blocks, want %d freed", tc.noHole, b0, b, tc.freed)
		}
		ext, err := f.Allocation(ctx, (tc.base+2)*blk, 2*blk)
		if err != nil || len(ext) != 1 || (ext[0].Flags != 0 && ext[0].Flags&server.StateZero == 0) {
			t.Errorf("zeroed range reported as %v (%v)", ext, err)
		}
		z := make([]byte, 4*blk)
		f.ReadAt(ctx, z, (tc.base+1)*blk)
		if z[blk-1] != 3 || !bytes.Equal(z[blk:3*blk], make([]byte, 2*blk)) || z[3*blk] != 3 {
			t.Errorf("zeroes NoHole=%v: wrong contents", tc.noHole)
		}
	}
	if err := f.WriteZeroes(ctx, 12*blk, 3*blk, server.ZeroFlags{}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8*blk)
	if err := f.ReadAt(ctx, got, 8*blk); err != nil {
		t.Fatal(err)
	}
	for i, b := range got {
		inZero := (i >= blk && i < 3*blk) || (i >= 4*blk && i < 7*blk)
		if (b == 0) != inZero {
			t.Fatalf("byte %d = %d", 8*blk+i, b)
		}
	}
	if _, err := f.Allocation(ctx, 64*blk, 1); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("allocation past the end: %v", err)
	}
}

func TestAllocationExtentBound(t *testing.T) {
	f, _ := newFile(t, 3000*blk, Options{})
	for i := 0; i < 3000; i += 2 {
		if err := f.WriteAt(ctx, []byte{1}, uint64(i)*blk, false); err != nil {
			t.Fatal(err)
		}
	}
	ext, err := f.Allocation(ctx, 0, 3000*blk)
	if err != nil {
		t.Fatal(err)
	}
	if len(ext) != maxExtents {
		t.Fatalf("%d extents, want the cap %d", len(ext), maxExtents)
	}
	var total uint64
	for _, e := range ext {
		total += e.Length
	}
	if total != maxExtents*blk {
		t.Fatalf("extents cover %d bytes", total)
	}
}

func TestWriteZeroesFallback(t *testing.T) {
	f, _ := newFile(t, 16*blk, Options{})
	f.h.Refuse(hostfile.ModePunchHole)
	f.h.Refuse(hostfile.ModeZeroRange)
	if err := f.WriteAt(ctx, bytes.Repeat([]byte{9}, 16*blk), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteZeroes(ctx, blk, blk, server.ZeroFlags{FastZero: true}); !errors.Is(err, syscall.ENOTSUP) {
		t.Fatalf("fast zero without support: %v", err)
	}
	if err := f.WriteZeroes(ctx, blk, blk+1, server.ZeroFlags{}); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3*blk)
	f.ReadAt(ctx, got, 0)
	if got[blk-1] != 9 || got[blk] != 0 || got[2*blk] != 0 || got[2*blk+1] != 9 {
		t.Fatalf("fallback zeroes wrong")
	}
	// Trim without hole punching is a successful no-op.
	if err := f.Trim(ctx, 0, blk, false); err != nil || got[0] != 9 {
		t.Fatalf("trim fallback: %v", err)
	}
}

func TestConcurrentIO(t *testing.T) {
	f, _ := newFile(t, 256*blk, Options{WriteThrough: true})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := bytes.Repeat([]byte{byte(g + 1)}, blk)
			for i := g; i < 256; i += 8 {
				if err := f.WriteAt(ctx, p, uint64(i)*blk, false); err != nil {
					t.Error(err)
				}
				if _, err := f.Allocation(ctx, 0, 256*blk); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got := make([]byte, 256*blk)
	f.ReadAt(ctx, got, 0)
	for i := range 256 {
		if got[i*blk] != byte(i%8+1) {
			t.Fatalf("block %d = %d", i, got[i*blk])
		}
	}
}

func TestIgnoreFlush(t *testing.T) {
	f, _ := newFile(t, blk, Options{IgnoreFlush: true})
	if err := f.Flush(ctx); err != nil || f.h.Syncs() != 0 {
		t.Fatalf("unsafe flush: %v, %d syncs", err, f.h.Syncs())
	}
	f2, _ := newFile(t, blk, Options{})
	if err := f2.Flush(ctx); err != nil || f2.h.Syncs() != 1 {
		t.Fatalf("flush: %v, %d syncs, want 1", err, f2.h.Syncs())
	}
}
