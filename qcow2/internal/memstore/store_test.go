package memstore_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

var (
	_ qcow2.Storage     = (*memstore.Store)(nil)
	_ qcow2.HolePuncher = (*memstore.Store)(nil)
)

// TestMatchesOSFile applies the same random operations to a Store and to a real file and
// compares every read, the sizes and the final contents: the file system is the oracle.
func TestMatchesOSFile(t *testing.T) {
	for seed := uint64(1); seed <= 20; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		f, err := os.Create(filepath.Join(t.TempDir(), "oracle"))
		if err != nil {
			t.Fatal(err)
		}
		fs := qcow2.NewFileStorage(f)
		s := memstore.New()
		const span = 64 << 10
		for i := 0; i < 300; i++ {
			off := rng.Int64N(span)
			n := rng.IntN(9000)
			switch rng.IntN(10) {
			case 0:
				size := rng.Int64N(span)
				if err1, err2 := fs.Truncate(size), s.Truncate(size); err1 != nil || err2 != nil {
					t.Fatal(err1, err2)
				}
			case 1:
				if err1, err2 := fs.PunchHole(off, int64(n)), s.PunchHole(off, int64(n)); err1 != nil || err2 != nil {
					t.Fatal(err1, err2)
				}
			case 2, 3, 4, 5:
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(rng.IntN(255) + 1)
				}
				n1, err1 := fs.WriteAt(p, off)
				n2, err2 := s.WriteAt(p, off)
				if n1 != n2 || err1 != nil || err2 != nil {
					t.Fatalf("write: file %d %v, store %d %v", n1, err1, n2, err2)
				}
			default:
				p1, p2 := make([]byte, n), make([]byte, n)
				n1, err1 := fs.ReadAt(p1, off)
				n2, err2 := s.ReadAt(p2, off)
				if n1 != n2 || !errors.Is(err2, err1) && (err1 != nil || err2 != nil) || !bytes.Equal(p1[:n1], p2[:n2]) {
					t.Fatalf("seed %d op %d: read %d+%d: file (%d, %v), store (%d, %v), contents equal %v",
						seed, i, off, n, n1, err1, n2, err2, bytes.Equal(p1[:n1], p2[:n2]))
				}
			}
			sz1, _ := fs.Size()
			sz2, _ := s.Size()
			if sz1 != sz2 {
				t.Fatalf("seed %d op %d: size file %d store %d", seed, i, sz1, sz2)
			}
		}
		want, _ := os.ReadFile(f.Name())
		got, err := s.Bytes(span * 2)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("seed %d: final contents differ (%v)", seed, err)
		}
		fs.Close()
	}
}

func TestSparse(t *testing.T) {
	s := memstore.New()
	const far = 8 << 30
	if _, err := s.WriteAt([]byte("end"), far); err != nil {
		t.Fatal(err)
	}
	if sz, _ := s.Size(); sz != far+3 {
		t.Fatalf("size %d", sz)
	}
	if a := s.Allocated(); a > 2*4096 {
		t.Fatalf("a write at 8 GiB allocated %d bytes", a)
	}
	p := bytes.Repeat([]byte{0xff}, 1<<20)
	if _, err := s.ReadAt(p, 1<<30); err != nil || !bytes.Equal(p, make([]byte, 1<<20)) {
		t.Fatalf("hole does not read as zeros (%v)", err)
	}
	if _, err := s.Bytes(1 << 30); err == nil {
		t.Fatal("Bytes materialised an 8 GiB store")
	}
	path := filepath.Join(t.TempDir(), "sparse")
	if err := s.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Size() != far+3 {
		t.Fatalf("file size %v %v", st.Size(), err)
	}
	back, err := memstore.FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if sz, _ := back.Size(); sz != far+3 {
		t.Fatalf("FromFile size %d", sz)
	}
	if a := back.Allocated(); a > 2*4096 {
		t.Fatalf("FromFile of a sparse file allocated %d bytes", a)
	}
	tail := make([]byte, 3)
	if _, err := back.ReadAt(tail, far); err != nil || string(tail) != "end" {
		t.Fatalf("FromFile tail %q %v", tail, err)
	}
}

func TestCloseReopen(t *testing.T) {
	s := memstore.New()
	s.WriteAt([]byte("x"), 0)
	s.Close()
	if _, err := s.ReadAt(make([]byte, 1), 0); !errors.Is(err, memstore.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if _, err := s.Size(); !errors.Is(err, memstore.ErrClosed) {
		t.Fatalf("size after close: %v", err)
	}
	p := make([]byte, 1)
	if _, err := s.Reopen().ReadAt(p, 0); err != nil || p[0] != 'x' {
		t.Fatalf("after reopen: %q %v", p, err)
	}
}

func TestInvalidOffsets(t *testing.T) {
	s := memstore.New()
	if _, err := s.WriteAt([]byte("x"), -1); !errors.Is(err, os.ErrInvalid) {
		t.Fatalf("negative offset: %v", err)
	}
	if _, err := s.WriteAt([]byte("x"), 1<<62); !errors.Is(err, os.ErrInvalid) {
		t.Fatalf("offset 2^62: %v", err)
	}
	if err := s.Truncate(-5); !errors.Is(err, os.ErrInvalid) {
		t.Fatalf("negative truncate: %v", err)
	}
	if n, err := s.ReadAt(make([]byte, 4), 0); n != 0 || err != io.EOF {
		t.Fatalf("read of empty store: %d %v", n, err)
	}
}

func TestConcurrentDisjointWrites(t *testing.T) {
	s := memstore.New()
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := bytes.Repeat([]byte{byte(g + 1)}, 1000)
			for i := 0; i < 200; i++ {
				off := int64((i*8+g)*1000) + 3
				if _, err := s.WriteAt(buf, off); err != nil {
					t.Error(err)
				}
				if i%50 == 0 {
					s.Sync()
				}
				got := make([]byte, 1000)
				if _, err := s.ReadAt(got, off); err != nil || !bytes.Equal(got, buf) {
					t.Errorf("goroutine %d read back wrong data (%v)", g, err)
				}
			}
		}()
	}
	wg.Wait()
}
