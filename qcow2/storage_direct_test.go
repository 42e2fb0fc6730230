// O_DIRECT storage: alignment detection, unaligned and concurrent requests against a shadow
// copy, and qcow2 images written with FileOptions.Direct judged by qemu-img.
package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"golang.org/x/sys/unix"
)

// directFile opens a new file with O_DIRECT; align, when non-zero, forces a larger alignment
// than the one detected (valid for O_DIRECT too), to exercise 4 KiB devices on a 512-byte one.
func directFile(t *testing.T, align int64) *FileStorage {
	t.Helper()
	s, err := OpenFile(filepath.Join(t.TempDir(), "f"), FileOptions{Create: true, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	flags, err := unix.FcntlInt(s.File().Fd(), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_DIRECT == 0 {
		t.Fatalf("not O_DIRECT: flags %#x, %v", flags, err)
	}
	var stx unix.Statx_t
	if err := unix.Statx(int(s.File().Fd()), "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx); err == nil &&
		stx.Mask&unix.STATX_DIOALIGN != 0 && int64(s.DirectAlign()) != int64(stx.Dio_offset_align) {
		t.Errorf("detected alignment %d, the kernel says %d", s.DirectAlign(), stx.Dio_offset_align)
	}
	if align != 0 {
		s.dio.align, s.dio.memAlign = align, uintptr(align)
	}
	return s
}

func TestDirectStorageUnaligned(t *testing.T) {
	for _, align := range []int64{0, 4096} {
		s := directFile(t, align)
		a := int64(s.DirectAlign())
		var shadow []byte
		write := func(off int, data []byte) {
			t.Helper()
			if n, err := s.WriteAt(data, int64(off)); err != nil || n != len(data) {
				t.Fatalf("WriteAt(%d, %d bytes) = %d, %v", off, len(data), n, err)
			}
			if end := off + len(data); end > len(shadow) {
				shadow = append(shadow, make([]byte, end-len(shadow))...)
			}
			copy(shadow[off:], data)
		}
		write(0, []byte("header"))                        // tiny, at 0
		write(4090, bytes.Repeat([]byte{1}, 12))          // across a block boundary
		write(8192, bytes.Repeat([]byte{2}, 8192))        // aligned (buffer may not be)
		write(20000, bytes.Repeat([]byte{3}, 3*4096+100)) // unaligned, several blocks
		write(100, []byte{9})
		got := make([]byte, len(shadow)+5000)
		n, err := s.ReadAt(got, 0)
		// The file grew to whole blocks; past what was written it reads as zeros.
		size, _ := s.Size()
		if size%a != 0 || size < int64(len(shadow)) {
			t.Errorf("align %d: size %d", a, size)
		}
		if int64(n) != min(size, int64(len(got))) || (n < len(got) && err != io.EOF) {
			t.Errorf("align %d: ReadAt = %d, %v (size %d)", a, n, err, size)
		}
		if !bytes.Equal(got[:len(shadow)], shadow) || !bytes.Equal(got[len(shadow):n], make([]byte, n-len(shadow))) {
			t.Errorf("align %d: contents differ from the shadow", a)
		}
		for _, r := range [][2]int{{1, 5}, {4095, 2}, {8191, 8194}, {20001, 12000}} {
			b := make([]byte, r[1])
			if _, err := s.ReadAt(b, int64(r[0])); err != nil {
				t.Fatalf("ReadAt(%v): %v", r, err)
			}
			if !bytes.Equal(b, shadow[r[0]:r[0]+r[1]]) {
				t.Errorf("align %d: ReadAt(%v) differs", a, r)
			}
		}
		if _, err := s.ReadAt(make([]byte, 10), size+100); err != io.EOF {
			t.Errorf("read past EOF: %v", err)
		}
		if err := s.Sync(); err != nil {
			t.Error(err)
		}
	}
}

// TestDirectStorageConcurrent has writers hammer disjoint, unaligned ranges that share blocks;
// a lost update in a read-modify-write would leave a range with another writer's old bytes.
func TestDirectStorageConcurrent(t *testing.T) {
	s := directFile(t, 0)
	const slot = 700 // not a divisor of 512: slots straddle blocks
	const slots = 64
	const rounds = 40
	var wg sync.WaitGroup
	errs := make(chan error, slots)
	for i := range slots {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for round := range rounds {
				b := bytes.Repeat([]byte{byte(i*rounds + round)}, slot)
				if _, err := s.WriteAt(b, int64(i*slot)); err != nil {
					errs <- err
					return
				}
				if r.IntN(4) == 0 {
					got := make([]byte, slot)
					if _, err := s.ReadAt(got, int64(i*slot)); err != nil || !bytes.Equal(got, b) {
						errs <- err
						if err == nil {
							t.Errorf("slot %d round %d: read back other bytes", i, round)
						}
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	all := make([]byte, slots*slot)
	if _, err := s.ReadAt(all, 0); err != nil {
		t.Fatal(err)
	}
	for i := range slots {
		want := bytes.Repeat([]byte{byte(i*rounds + rounds - 1)}, slot)
		if !bytes.Equal(all[i*slot:(i+1)*slot], want) {
			t.Errorf("slot %d lost an update", i)
		}
	}
}

// TestDirectImage writes qcow2 images opened with FileOptions.Direct (512-byte, 64 KiB and
// extended-L2 clusters, a backing file and an external data file opened the same way):
// random writes, zeroes and discards, read back through the engine and judged by qemu-img
// compare and check.
func TestDirectImage(t *testing.T) {
	for _, c := range []struct{ name, opts string }{
		{"512", "cluster_size=512"},
		{"64k", "cluster_size=65536"},
		{"extl2", "extended_l2=on"},
		{"backing", "cluster_size=4096,backing_file=BASE,backing_fmt=qcow2"},
		{"datafile", "data_file=DATA"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			const size = 4 << 20
			shadow := make([]byte, size)
			base := filepath.Join(dir, "base.qcow2")
			engCreate(t, dir, "base.qcow2", "", "4M")
			engQemu(t, "qemu-io", "-c", "write -P 7 0 4M", base)
			if c.name == "backing" {
				for i := range shadow {
					shadow[i] = 7
				}
			}
			opts := replaceAll(replaceAll(c.opts, "BASE", base), "DATA", filepath.Join(dir, "d.data"))
			p := engCreate(t, dir, "d.qcow2", opts, "4M")
			img, err := Open(p, OpenOptions{File: FileOptions{Direct: true}})
			if err != nil {
				t.Fatal(err)
			}
			if fs, ok := img.file.(*syncLatch).Storage.(*FileStorage); !ok || fs.DirectAlign() == 0 {
				t.Fatalf("the image file is not O_DIRECT: %T", img.file.(*syncLatch).Storage)
			}
			r := rand.New(rand.NewPCG(7, 7))
			for range 200 {
				off := uint64(r.IntN(size - 70000))
				n := uint64(1 + r.IntN(70000))
				var err error
				switch r.IntN(5) {
				case 0:
					err = img.Zero(GuestOffset(off), n, unmapFlag(r.IntN(2) == 0))
					clear(shadow[off : off+n])
				case 1:
					err = img.Discard(GuestOffset(off), n)
					// Version 3: discarded clusters read as zeros (the zero flag hides a
					// backing file).
					cs := img.geo.ClusterSize()
					for c := alignUp(off, cs); c+cs <= off+n; c += cs {
						clear(shadow[c : c+cs])
					}
				default:
					b := make([]byte, n)
					for i := range b {
						b[i] = byte(r.Uint32())
					}
					_, err = img.WriteAt(b, int64(off))
					copy(shadow[off:], b)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			got := make([]byte, size)
			if _, err := img.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if d := engFirstDiff(got, shadow); d != "" {
				t.Errorf("read back: %s", d)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			engCompareShadow(t, p, shadow)
			corpus.RequireClean(t, p)
		})
	}
}

// TestDirectImageConcurrent: concurrent guest writes, zeroes and discards on a 512-byte-cluster
// image whose O_DIRECT alignment is forced to 4 KiB, so that eight clusters (data, L2 tables,
// refcount blocks) share every block and most writes are read-modify-writes racing with
// others on the same block. Each goroutine owns interleaved 1 KiB windows of the disk; its
// shadow must read back, and qemu-img must find the image clean and equal to the shadows.
func TestDirectImageConcurrent(t *testing.T) {
	dir := t.TempDir()
	const size = 2 << 20
	const workers, window, stride = 8, 1024, 8 * 1024
	p := engCreate(t, dir, "d.qcow2", "cluster_size=512", "2M")
	opener := func(path string, o FileOptions) (Storage, error) {
		o.Direct = true
		s, err := OpenFile(path, o)
		if err != nil {
			return nil, err
		}
		s.dio.align, s.dio.memAlign = 4096, 4096
		return s, nil
	}
	img, err := Open(p, OpenOptions{Opener: opener})
	if err != nil {
		t.Fatal(err)
	}
	shadow := make([]byte, size)
	ops := 150
	if testing.Short() {
		ops = 40
	}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 99))
			for range ops {
				base := uint64(r.IntN(size/stride)*stride + w*window)
				off := base + uint64(r.IntN(window))
				n := 1 + uint64(r.IntN(int(base+window-off)))
				var err error
				switch r.IntN(6) {
				case 0:
					err = img.Zero(GuestOffset(off), n, unmapFlag(r.IntN(2) == 0))
					clear(shadow[off : off+n])
				case 1:
					err = img.Discard(GuestOffset(off), n)
					for c := alignUp(off, 512); c+512 <= off+n; c += 512 {
						clear(shadow[c : c+512])
					}
				default:
					b := make([]byte, n)
					for i := range b {
						b[i] = byte(r.Uint32()) | 1
					}
					_, err = img.WriteAt(b, int64(off))
					copy(shadow[off:], b)
				}
				if err == nil && r.IntN(3) == 0 {
					got := make([]byte, window)
					if _, err = img.ReadAt(got, int64(base)); err == nil && !bytes.Equal(got, shadow[base:base+window]) {
						t.Errorf("worker %d: window at %d reads other bytes", w, base)
					}
				}
				if err == nil && r.IntN(20) == 0 {
					err = img.Flush()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	engCompareShadow(t, p, shadow)
	corpus.RequireClean(t, p)
}

// TestDirectStorageZeroVsNeighbourWrite: ZeroRange and PunchHole over part of a block race
// with read-modify-writes of the rest of that block by other writers. A read-modify-write that
// read the block before the range was zeroed and wrote it back after would bring the old bytes
// back into the range (a zero copy-on-write would then expose them to the guest).
func TestDirectStorageZeroVsNeighbourWrite(t *testing.T) {
	s := directFile(t, 4096)
	const slot = 700
	const slots = 32
	rounds := 60
	if testing.Short() {
		rounds = 20
	}
	if _, err := s.WriteAt(make([]byte, slots*slot), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.ZeroRange(0, 1); errors.Is(err, ErrUnsupported) {
		t.Logf("no ZERO_RANGE here: PunchHole only")
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for i := range slots {
		wg.Go(func() {
			base := int64(i * slot)
			for round := range rounds {
				p := bytes.Repeat([]byte{byte(1 + (i*rounds+round)%250)}, slot)
				if _, err := s.WriteAt(p, base); err != nil {
					t.Error(err)
					return
				}
				var err error
				if round%2 == 0 {
					err = s.ZeroRange(base+100, slot-200)
				}
				if round%2 == 1 || errors.Is(err, ErrUnsupported) {
					err = s.PunchHole(base+100, slot-200)
				}
				if err != nil {
					t.Error(err)
					return
				}
				got := make([]byte, slot)
				if _, err := s.ReadAt(got, base); err != nil {
					t.Error(err)
					return
				}
				clear(p[100 : slot-100])
				if !bytes.Equal(got, p) {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("slot %d round %d", i, round))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Errorf("zeroed ranges came back (%d times), e.g. %s", len(bad), bad[0])
	}
}
