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
	"strings"
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

// TestZeroIsFast checks the prediction against what the engine then does: a request predicted
// fast must not grow the host file or leave data clusters in its range; a slow one is refused
// with ENOTSUP and changes nothing.
func TestZeroIsFast(t *testing.T) {
	ctx := context.Background()
	const k = 1 << 10
	for _, tc := range []struct {
		name   string
		opts   string
		prep   []string // qemu-io commands
		off, n uint64
		want   bool
	}{
		{"aligned-data", "", []string{"write -P 1 0 256k"}, 64 * k, 128 * k, true},
		{"unaligned-head-data", "", []string{"write -P 1 0 256k"}, 64*k + 512, 128 * k, false},
		{"unaligned-tail-data", "", []string{"write -P 1 0 256k"}, 64 * k, 128*k + 512, false},
		{"unaligned-in-zero", "", []string{"write -P 1 0 256k", "write -z 64k 64k"}, 64*k + 512, 1024, true},
		{"unaligned-unallocated", "", nil, 100, 200, true},
		{"head-zero-tail-data", "", []string{"write -P 1 0 256k", "write -z 0 64k"}, 512, 128*k - 1024, false},
		{"v2", "compat=0.10", nil, 0, 64 * k, false},
		{"extl2-subcluster", "extended_l2=on", []string{"write -P 1 0 64k"}, 2 * k, 4 * k, true},
		{"extl2-partial-subcluster", "extended_l2=on", []string{"write -P 1 0 64k"}, 2*k + 512, 4 * k, false},
		{"extl2-compressed-partial", "extended_l2=on", []string{"write -c -P 1 0 64k"}, 0, 32 * k, false},
		{"extl2-compressed-whole", "extended_l2=on", []string{"write -c -P 1 0 64k"}, 0, 64 * k, true},
		{"compressed", "", []string{"write -c -P 1 0 64k"}, 0, 64 * k, true},
		{"end-of-image-unaligned", "", []string{"write -P 1 960k 64k"}, 1024*k - 1000, 1000, false},
		// The image's last cluster is partial: a zeroing from its start to the end is whole.
		{"end-of-odd-image", "size=1049088", []string{"write -P 1 1M 512"}, 1024 * k, 512, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := "1M"
			if strings.HasPrefix(tc.opts, "size=") {
				size, tc.opts = strings.TrimPrefix(tc.opts, "size="), ""
			}
			p := newImage(t, tc.opts, size)
			if len(tc.prep) > 0 {
				qemuIO(t, "qcow2", p, tc.prep...)
			}
			b := openBackend(t, p, Options{}, qcow2.OpenOptions{})
			got, err := b.zeroIsFast(tc.off, tc.n)
			if err != nil || got != tc.want {
				t.Fatalf("zeroIsFast(%d, %d) = %v, %v; want %v", tc.off, tc.n, got, err, tc.want)
			}
			before := make([]byte, tc.n)
			if err := b.ReadAt(ctx, before, tc.off); err != nil {
				t.Fatal(err)
			}
			fi, _ := os.Stat(p)
			err = b.WriteZeroes(ctx, tc.off, tc.n, server.ZeroFlags{FastZero: true})
			after := make([]byte, tc.n)
			if err := b.ReadAt(ctx, after, tc.off); err != nil {
				t.Fatal(err)
			}
			if !tc.want {
				if !errors.Is(err, syscall.ENOTSUP) || !bytes.Equal(before, after) {
					t.Fatalf("slow zero: err %v, data changed %v", err, !bytes.Equal(before, after))
				}
				return
			}
			if err != nil || !bytes.Equal(after, make([]byte, tc.n)) {
				t.Fatalf("fast zero: err %v, zeros %v", err, bytes.Equal(after, make([]byte, tc.n)))
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			fi2, _ := os.Stat(p)
			if fi2.Size() > fi.Size() {
				t.Errorf("fast zero grew the file from %d to %d", fi.Size(), fi2.Size())
			}
			ext, err := b.img.Map(tc.off, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range ext {
				if e.Kind == qcow2.KindData || e.Kind == qcow2.KindCompressed {
					if e.Start >= tc.off && e.Start+e.Length <= tc.off+tc.n && (tc.off%(2*k) == 0 || tc.opts == "") {
						// Whole data runs inside a fast-zeroed range must be gone.
						t.Errorf("fast zero left %v", e)
					}
				}
			}
		})
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
