package qcow2

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// syncCounter is a FileStorage that records where every Sync came from (the engine functions
// on the stack), so a test can tell a reservation's sync from one on the write path. The
// host-file layer under it counts every fdatasync that reaches the kernel; the two counts
// agree when no sync goes around Storage.Sync.
type syncCounter struct {
	*FileStorage
	mu    sync.Mutex
	sites []string
}

func (s *syncCounter) Sync() error {
	var pcs [32]uintptr
	n := runtime.Callers(2, pcs[:])
	frames := runtime.CallersFrames(pcs[:n])
	var names []string
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "github.com/qnbd/qnbd/qcow2.") && !strings.HasSuffix(f.File, "_test.go") {
			names = append(names, strings.TrimPrefix(f.Function, "github.com/qnbd/qnbd/qcow2."))
		}
		if !more {
			break
		}
	}
	s.mu.Lock()
	s.sites = append(s.sites, strings.Join(names, "<"))
	s.mu.Unlock()
	return s.FileStorage.Sync()
}

func (s *syncCounter) take() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.sites
	s.sites = nil
	return out
}

// TestRandomWritesWithoutFlushDoNotSync: random 4 KiB writes spread over a 4 TiB image, with a
// 4-table L2 cache so that nearly every write allocates an L2 table and evicts a dirty one,
// and no FLUSH, in the default (writeback) mode, sync only where the allocator reserves a
// batch of clusters (alloc_reserve.go): never on eviction, never per write. Before batch
// reservation every eviction waited on a refcount flush and a data sync (about two fdatasync
// per write). The count is the host-file layer's (internal/hostfile), which sees every
// fdatasync of the image file whoever asks for it. The image file is not opened O_SYNC or
// O_DSYNC either, which would make every write a sync that no count sees (qemu-nbd 7.2 opens
// it O_RDWR only: docs/hostfile.md). The data reads back, and qemu-img check finds the image
// clean.
func TestRandomWritesWithoutFlushDoNotSync(t *testing.T) {
	const writes = 800
	p := engCreate(t, t.TempDir(), "big.qcow2", "cluster_size=64k", "4T")
	var counter *syncCounter
	img := openTestImage(t, p, OpenOptions{L2CacheBytes: 4 << 16, Opener: func(path string, fo FileOptions) (Storage, error) {
		f, err := OpenFile(path, fo)
		if err != nil {
			return nil, err
		}
		if fo.Role == roleImage {
			counter = &syncCounter{FileStorage: f}
			return counter, nil
		}
		return f, nil
	}})
	fl, err := counter.host().Flags()
	if err != nil {
		t.Fatal(err)
	}
	if fl&(unix.O_SYNC|unix.O_DSYNC) != 0 {
		t.Fatalf("image file opened with flags %#o: O_SYNC or O_DSYNC set", fl)
	}
	counter.take() // opening
	opened := counter.host().Syncs()

	rng := rand.New(rand.NewPCG(11, 7))
	size := img.Size()
	offs := make([]int64, writes)
	buf := make([]byte, 4096)
	for i := range offs {
		offs[i] = int64(rng.Uint64N(size/4096)) * 4096
		fillPattern(buf, byte(i))
		if _, err := img.WriteAt(buf, offs[i]); err != nil {
			t.Fatal(err)
		}
	}
	sites := counter.take()
	if n := counter.host().Syncs() - opened; n != uint64(len(sites)) {
		t.Errorf("the image file saw %d fdatasync, Storage.Sync was called %d times: a sync bypasses the storage layer", n, len(sites))
	}
	reservations := 0
	for _, s := range sites {
		if !strings.Contains(s, "(*allocator).ensureDurable") {
			t.Errorf("sync outside a batch reservation: %s", s)
			continue
		}
		reservations++
	}
	// 800 writes allocate about 1600 clusters (a data cluster and an L2 table each); batches
	// double from 16 clusters, so about 7 reservations of one sync each (two when a new
	// refcount block's reftable entry goes with it). A sync per write would be 800 or more.
	if len(sites) > 20 {
		t.Errorf("%d syncs during %d writes without a flush, want at most 20", len(sites), writes)
	}
	t.Logf("%d writes, %d syncs (all batch reservations: %v)", writes, len(sites), reservations == len(sites))

	// Everything written reads back (later writes win).
	want := map[int64]byte{}
	for i, off := range offs {
		want[off] = byte(i)
	}
	got := make([]byte, 4096)
	for off, pat := range want {
		if _, err := img.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		fillPattern(buf, pat)
		if !bytes.Equal(got, buf) {
			t.Fatalf("4 KiB at %#x does not read back", off)
		}
	}
}
