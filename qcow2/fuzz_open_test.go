package qcow2

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// FuzzOpenRead opens arbitrary bytes as an image (read-only, in memory, no backing or data
// file opened) and reads and maps ranges chosen from the input. Nothing may panic, hang (a
// 10 s watchdog), or allocate more than 256 MiB for one input. The seeds in
// testdata/fuzz/FuzzOpenRead are small qemu-img images (512-byte clusters, a few KiB each;
// QNBD_GEN_FUZZ_SEEDS=1 regenerates them, see TestGenerateOpenReadSeeds).
func FuzzOpenRead(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1<<20 {
			return
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		// A watchdog: the fuzzing engine has no per-input timeout, so a hang would only stall
		// the workers. The stuck goroutine is reported with every goroutine's stack.
		done := make(chan error, 1)
		go func() {
			defer func() {
				if p := recover(); p != nil {
					buf := make([]byte, 64<<10)
					done <- fmt.Errorf("panic: %v\n%s", p, buf[:runtime.Stack(buf, false)])
				}
			}()
			done <- fuzzOpenRead(data)
		}()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			buf := make([]byte, 1<<20)
			t.Fatalf("one input hangs for 10 s:\n%s", buf[:runtime.Stack(buf, true)])
		}
		runtime.ReadMemStats(&after)
		if a := after.TotalAlloc - before.TotalAlloc; a > 256<<20 {
			t.Fatalf("one input allocated %d MiB", a>>20)
		}
	})
}

// errNoHostFiles refuses every host file the fuzzed header names.
var errNoHostFiles = errors.New("fuzz: no host files")

func fuzzOpenRead(data []byte) error {
	img, err := OpenStorage(memstore.FromBytes(data), "/nonexistent", OpenOptions{
		ReadOnly:  true,
		NoBacking: true,
		Opener:    func(string, FileOptions) (Storage, error) { return nil, errNoHostFiles },
	})
	if err != nil {
		return nil
	}
	defer img.Close()
	h := fnv.New64a()
	h.Write(data)
	rng := rand.New(rand.NewPCG(h.Sum64(), uint64(len(data))))
	size := img.Size()
	hdr := img.Header()
	cs := hdr.ClusterSize()
	buf := make([]byte, 256<<10)
	for i := 0; i < 16; i++ {
		var off uint64
		switch {
		case size == 0:
		case i < 4:
			off = min(uint64(i)*cs, size-1) // the first clusters, where seeds keep their data
		default:
			off = rng.Uint64N(size)
		}
		n := min(rng.Uint64N(uint64(len(buf)))+1, size-off)
		if _, err := img.ReadAt(buf[:n], int64(off)); err != nil && size > 0 {
			if errors.Is(err, ErrOutOfRange) {
				return fmt.Errorf("read %d+%d inside a %d-byte image: %w", off, n, size, err)
			}
		}
		if _, err := img.Map(GuestOffset(off), min(n*64, size-off)); err != nil && errors.Is(err, ErrOutOfRange) {
			return fmt.Errorf("map %d+%d inside a %d-byte image: %w", off, n*64, size, err)
		}
	}
	// Reading past the end must fail cleanly.
	if _, err := img.ReadAt(buf[:1], int64(min(size, 1<<62))); !errors.Is(err, ErrOutOfRange) {
		return fmt.Errorf("read at the end of a %d-byte image: %v", size, err)
	}
	return nil
}

// openReadSeeds are the qemu-img images FuzzOpenRead starts from: 512-byte clusters and small
// virtual sizes, with data, compressed, zero and discarded clusters, snapshots and the usual
// header variants. Each is a list of qemu-img/qemu-io steps.
var openReadSeeds = []struct {
	name   string
	create string // -o options
	size   string
	io     []string // qemu-io commands
	snap   bool
}{
	{"empty", "cluster_size=512", "64k", nil, false},
	{"data", "cluster_size=512", "64k", []string{"write -P 0x11 0 1536", "write -P 0x22 8k 512"}, false},
	{"v2-data", "compat=0.10,cluster_size=512", "64k", []string{"write -P 0x33 512 1k"}, false},
	{"compressed-zlib", "cluster_size=512", "32k", []string{"write -c -P 0x44 0 512", "write -c -P 0x45 1k 512"}, false},
	{"compressed-zstd", "cluster_size=512,compression_type=zstd", "32k", []string{"write -c -P 0x46 0 512", "write -c -P 0x47 512 512"}, false},
	{"zero-discard", "cluster_size=512", "32k", []string{"write -P 0x55 0 4k", "write -z 512 1k", "discard 2k 1k"}, false},
	{"snapshot-cow", "cluster_size=512", "32k", []string{"write -P 0x66 0 1k"}, true},
	{"refbits1", "cluster_size=512,refcount_bits=1", "32k", []string{"write -P 0x77 0 512"}, false},
	{"refbits64", "cluster_size=512,refcount_bits=64", "32k", []string{"write -P 0x78 0 512"}, false},
	{"lazy", "cluster_size=512,lazy_refcounts=on", "32k", []string{"write -P 0x79 0 512"}, false},
	{"backing-named", "cluster_size=512,backing_file=base.raw,backing_fmt=raw", "32k", []string{"write -P 0x7a 512 512"}, false},
	{"4k-clusters", "cluster_size=4096", "64k", []string{"write -P 0x7b 0 4k", "write -c -P 0x7c 8k 4k"}, false},
	{"big-virtual", "cluster_size=512", "64M", []string{"write -P 0x7d 32M 512"}, false},
}

// TestGenerateOpenReadSeeds writes testdata/fuzz/FuzzOpenRead when QNBD_GEN_FUZZ_SEEDS is set;
// otherwise it checks the committed seeds: each must open, and read the same bytes qemu-img
// reads from it.
func TestGenerateOpenReadSeeds(t *testing.T) {
	seedDir := filepath.Join("testdata", "fuzz", "FuzzOpenRead")
	dir := t.TempDir()
	if os.Getenv("QNBD_GEN_FUZZ_SEEDS") != "" {
		qemuImg(t, "create", "-q", "-f", "raw", filepath.Join(dir, "base.raw"), "32k")
		if err := os.MkdirAll(seedDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, c := range openReadSeeds {
			img := filepath.Join(dir, c.name+".qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", c.create, img, c.size)
			for i, cmd := range c.io {
				if c.snap && i == len(c.io)-1 {
					qemuImg(t, "snapshot", "-c", "s1", img)
				}
				qemuIO(t, img, cmd)
			}
			if c.snap {
				qemuIO(t, img, "write -P 0x99 512 512")
			}
			b, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			seed := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			if err := os.WriteFile(filepath.Join(seedDir, "qemu-"+c.name), []byte(seed), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(seedDir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "qemu-") {
			continue
		}
		n++
		b, err := os.ReadFile(filepath.Join(seedDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var data string
		if _, err := fmt.Sscanf(strings.SplitN(string(b), "\n", 3)[1], "[]byte(%q)", &data); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		img := writeTemp(t, dir, e.Name()+".qcow2", []byte(data))
		raw := filepath.Join(dir, e.Name()+".raw")
		// -U: no lock; the backing file named by one seed does not exist here, so read the
		// qcow2 layer alone, as the fuzzer does (NoBacking).
		qemuImg(t, "convert", "-U", "-O", "raw",
			`json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"`+img+`"}}`, raw)
		want, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		im, err := OpenStorage(memstore.FromBytes([]byte(data)), dir, OpenOptions{ReadOnly: true, NoBacking: true})
		if err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		got := make([]byte, im.Size())
		if _, err := im.ReadAt(got, 0); err != nil {
			t.Fatalf("%s: %v", e.Name(), err)
		}
		im.Close()
		if !bytes.Equal(got, want) {
			t.Errorf("%s: reads differ from qemu-img convert", e.Name())
		}
	}
	if n < len(openReadSeeds) {
		t.Errorf("%d seeds in %s, want %d", n, seedDir, len(openReadSeeds))
	}
}
