// O_DIRECT storage: unaligned and concurrent requests against a shadow copy, and a qcow2
// image written through it.
package qcow2export

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qnbd/qnbd/qcow2"
)

func TestDirectFileUnaligned(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	s, err := DirectOpener(p, qcow2.FileOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
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
	if size%DirectAlign != 0 || size < int64(len(shadow)) {
		t.Errorf("size %d", size)
	}
	if int64(n) != min(size, int64(len(got))) || (n < len(got) && err != io.EOF) {
		t.Errorf("ReadAt = %d, %v (size %d)", n, err, size)
	}
	if !bytes.Equal(got[:len(shadow)], shadow) || !bytes.Equal(got[len(shadow):n], make([]byte, n-len(shadow))) {
		t.Error("contents differ from the shadow")
	}
	for _, r := range [][2]int{{1, 5}, {4095, 2}, {8191, 8194}, {20001, 12000}} {
		b := make([]byte, r[1])
		if _, err := s.ReadAt(b, int64(r[0])); err != nil {
			t.Fatalf("ReadAt(%v): %v", r, err)
		}
		if !bytes.Equal(b, shadow[r[0]:r[0]+r[1]]) {
			t.Errorf("ReadAt(%v) differs", r)
		}
	}
	if _, err := s.ReadAt(make([]byte, 10), size+100); err != io.EOF {
		t.Errorf("read past EOF: %v", err)
	}
	if err := s.Sync(); err != nil {
		t.Error(err)
	}
}

// TestDirectFileConcurrent has writers hammer disjoint, unaligned ranges that share blocks;
// a lost update in a read-modify-write would leave a range with another writer's old bytes.
func TestDirectFileConcurrent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	s, err := DirectOpener(p, qcow2.FileOptions{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const slot = 700 // not a divisor of 4096: slots straddle blocks
	const slots = 64
	const rounds = 40
	var wg sync.WaitGroup
	errs := make(chan error, slots)
	for i := range slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
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
		}()
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

// TestDirectImage writes a qcow2 image through DirectOpener (512-byte and 64 KiB clusters)
// and lets qemu-img judge it.
func TestDirectImage(t *testing.T) {
	for _, cs := range []string{"512", "65536"} {
		t.Run(cs, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "d.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size="+cs, p, "4M")
			img, err := qcow2.Open(p, qcow2.OpenOptions{Opener: DirectOpener})
			if err != nil {
				t.Fatal(err)
			}
			shadow := make([]byte, 4<<20)
			r := rand.New(rand.NewPCG(7, 7))
			for range 200 {
				off := r.IntN(len(shadow) - 70000)
				n := 1 + r.IntN(70000)
				b := make([]byte, n)
				for i := range b {
					b[i] = byte(r.Uint32())
				}
				if _, err := img.WriteAt(b, int64(off)); err != nil {
					t.Fatal(err)
				}
				copy(shadow[off:], b)
			}
			if err := img.WriteZeroes(1<<20, 256<<10, true); err != nil {
				t.Fatal(err)
			}
			clear(shadow[1<<20 : 1<<20+256<<10])
			got := make([]byte, len(shadow))
			if _, err := img.ReadAt(got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, shadow) {
				t.Error("read back differs")
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			raw := filepath.Join(dir, "shadow.raw")
			if err := os.WriteFile(raw, shadow, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("qemu-img", "compare", "-q", p, raw).CombinedOutput(); err != nil {
				t.Errorf("qemu-img compare: %v\n%s", err, out)
			}
			checkClean(t, p)
		})
	}
}
