// In-process tests of the Backend: errno classes, FUA flushes, TRIM modes, fast-zero
// prediction, CACHE.
package qcow2export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

func TestClassify(t *testing.T) {
	host := &os.PathError{Op: "write", Path: "x", Err: syscall.EDQUOT}
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{qcow2.ErrReadOnly, syscall.EPERM},
		{fmt.Errorf("writing: %w", qcow2.ErrNoSpace), syscall.ENOSPC},
		{qcow2.ErrOutOfRange, syscall.EINVAL},
		{qcow2.ErrClosed, syscall.ESHUTDOWN},
		{fmt.Errorf("%w: L2 entry points into the header", qcow2.ErrCorrupt), syscall.EIO},
		// A corrupt-image error whose chain also holds EINVAL is still EIO.
		{fmt.Errorf("%w: %w", qcow2.ErrCorrupt, syscall.EINVAL), syscall.EIO},
		{qcow2.ErrCompressedData, syscall.EIO},
		{qcow2.ErrUnsupported, syscall.EIO},
		{&qcow2.FormatError{Field: "l1_size"}, syscall.EIO},
		{host, syscall.EDQUOT},
		{errors.New("something else"), syscall.EIO},
	} {
		got := classify(tc.err)
		var e *Error
		if !errors.As(got, &e) || e.Errno != tc.want || !errors.Is(got, tc.want) {
			t.Errorf("classify(%v) = %v, want errno %v", tc.err, got, tc.want)
		}
		for _, other := range []syscall.Errno{syscall.EPERM, syscall.ENOSPC, syscall.EINVAL, syscall.EIO} {
			if other != tc.want && errors.Is(got, other) {
				t.Errorf("classify(%v) also matches %v", tc.err, other)
			}
		}
		if got.Error() != tc.err.Error() {
			t.Errorf("classify kept message %q, want %q", got.Error(), tc.err.Error())
		}
	}
	if classify(nil) != nil {
		t.Error("classify(nil) != nil")
	}
}

// flushCounter counts engine flushes.
type flushCounter struct {
	qcow2.NopHooks
	n atomic.Int64
}

func (f *flushCounter) Flushed(time.Duration) { f.n.Add(1) }

func newImage(t *testing.T, opts string, size string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img.qcow2")
	args := []string{"create", "-q", "-f", "qcow2"}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	qemuImg(t, append(args, p, size)...)
	return p
}

func openBackend(t *testing.T, path string, o Options, oo qcow2.OpenOptions) *Backend {
	t.Helper()
	img, err := qcow2.Open(path, oo)
	if err != nil {
		t.Fatal(err)
	}
	b := New(img, o)
	t.Cleanup(func() {
		b.Close()
		if err := img.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return b
}

func TestFUAFlushes(t *testing.T) {
	ctx := context.Background()
	p := newImage(t, "", "4M")
	fc := &flushCounter{}
	b := openBackend(t, p, Options{Discard: true}, qcow2.OpenOptions{Hooks: fc})
	buf := bytes.Repeat([]byte{7}, 4096)
	step := func(what string, wantFlush bool, f func() error) {
		t.Helper()
		before := fc.n.Load()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := fc.n.Load() > before; got != wantFlush {
			t.Errorf("%s: flushed %v, want %v", what, got, wantFlush)
		}
	}
	step("write", false, func() error { return b.WriteAt(ctx, buf, 0, false) })
	step("write fua", true, func() error { return b.WriteAt(ctx, buf, 8192, true) })
	step("zero", false, func() error { return b.WriteZeroes(ctx, 0, 4096, server.ZeroFlags{}) })
	step("zero fua", true, func() error { return b.WriteZeroes(ctx, 0, 4096, server.ZeroFlags{FUA: true}) })
	step("trim", false, func() error { return b.Trim(ctx, 0, 1<<20, false) })
	step("trim fua", true, func() error { return b.Trim(ctx, 0, 1<<20, true) })
	step("flush", true, func() error { return b.Flush(ctx) })
}

func TestTrimOnlyWithDiscard(t *testing.T) {
	ctx := context.Background()
	for _, discard := range []bool{false, true} {
		p := newImage(t, "", "4M")
		b := openBackend(t, p, Options{Discard: discard}, qcow2.OpenOptions{})
		data := bytes.Repeat([]byte{0x5a}, 128<<10)
		if err := b.WriteAt(ctx, data, 0, false); err != nil {
			t.Fatal(err)
		}
		if err := b.Trim(ctx, 0, 128<<10, false); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data))
		if err := b.ReadAt(ctx, got, 0); err != nil {
			t.Fatal(err)
		}
		ext, err := b.Allocation(ctx, 0, 128<<10)
		if err != nil {
			t.Fatal(err)
		}
		if discard {
			if !bytes.Equal(got, make([]byte, len(got))) || len(ext) != 1 || ext[0].Flags != server.StateHole|server.StateZero {
				t.Errorf("discard=unmap: trim left %x... and %v", got[:4], ext)
			}
		} else if !bytes.Equal(got, data) || len(ext) != 1 || ext[0].Flags != 0 {
			t.Errorf("discard=ignore: trim changed the data or map: %x... %v", got[:4], ext)
		}
	}
}

func TestReadOnlyWriteIsEPERM(t *testing.T) {
	ctx := context.Background()
	p := newImage(t, "", "1M")
	b := openBackend(t, p, Options{}, qcow2.OpenOptions{ReadOnly: true})
	for what, err := range map[string]error{
		"write": b.WriteAt(ctx, make([]byte, 512), 0, false),
		"zero":  b.WriteZeroes(ctx, 0, 512, server.ZeroFlags{}),
	} {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s on a read-only image: %v, want EPERM", what, err)
		}
	}
	if err := b.ReadAt(ctx, make([]byte, 512), 1<<20); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("read past the end: %v, want EINVAL", err)
	}
}

func TestCache(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", base, "4M")
	qemuIO(t, "qcow2", base, "write -P 3 1M 1M")
	top := filepath.Join(dir, "top.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top)
	qemuIO(t, "qcow2", top, "write -P 4 0 64k", "write -c -P 5 3M 64k")
	b := openBackend(t, top, Options{}, qcow2.OpenOptions{})
	mapBefore, err := b.img.Map(0, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Cache(ctx, 0, 4<<20); err != nil {
		t.Fatal(err)
	}
	mapAfter, err := b.img.Map(0, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(mapBefore) != fmt.Sprint(mapAfter) {
		t.Errorf("cache changed the image:\n%v\n%v", mapBefore, mapAfter)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := b.Cache(cctx, 0, 4<<20); !errors.Is(err, context.Canceled) {
		t.Errorf("cache with a cancelled context: %v", err)
	}
}
