package qcow2

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/fuzzseed"
)

// ccMem is a minimal in-memory Storage for the check fuzzer: a byte slice that refuses to grow
// past limit, so that a repair of a hostile image cannot make the test allocate without bound.
type ccMem struct {
	b     []byte
	limit int64
}

var errCCMemLimit = errors.New("ccMem: size limit")

func (m *ccMem) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("negative offset")
	}
	if off >= int64(len(m.b)) {
		return 0, io.EOF
	}
	n := copy(p, m.b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (m *ccMem) WriteAt(p []byte, off int64) (int, error) {
	end := off + int64(len(p))
	if off < 0 || end > m.limit {
		return 0, errCCMemLimit
	}
	if end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *ccMem) Truncate(n int64) error {
	if n < 0 || n > m.limit {
		return errCCMemLimit
	}
	if n <= int64(len(m.b)) {
		m.b = m.b[:n]
	} else {
		m.b = append(m.b, make([]byte, n-int64(len(m.b)))...)
	}
	return nil
}

func (m *ccMem) Sync() error          { return nil }
func (m *ccMem) Size() (int64, error) { return int64(len(m.b)), nil }
func (m *ccMem) Close() error         { return nil }

// FuzzCheck feeds mutated images to Check and RepairAll. Neither may panic or grow memory
// without bound (ccMem caps the file at 64 MiB); a repair that reports success must leave an
// image that a fresh check finds clean. The seed corpus in testdata/fuzz/FuzzCheck holds small
// qemu-img-made images: clean ones, with snapshots, compressed clusters, bitmaps, extended L2,
// odd refcount widths, and broken ones (see ccFuzzSeeds).
func FuzzCheck(f *testing.F) {
	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) > 4<<20 {
			return
		}
		s := &ccMem{b: append([]byte(nil), img...), limit: 64 << 20}
		res, err := CheckStorage(s, RepairNone)
		if err == nil {
			if res == nil {
				t.Fatal("nil result without error")
			}
			if res.Corruptions < 0 || res.Leaks < 0 || res.CheckErrors < 0 {
				t.Fatalf("negative counters: %+v", res)
			}
			if len(res.Messages) > maxCheckMessages+1 {
				t.Fatalf("%d messages", len(res.Messages))
			}
		}
		res, err = CheckStorage(s, RepairAll)
		if err != nil || res.ExitCode() != 0 {
			return
		}
		again, err := CheckStorage(s, RepairNone)
		if err != nil || !again.Clean() {
			t.Fatalf("RepairAll reported a clean image, a new check says %v %+v", err, again)
		}
	})
}

// TestFuzzCheckSeeds regenerates the seed corpus of FuzzCheck from qemu-img-made images and
// fails unless testdata/fuzz/FuzzCheck holds each seed byte for byte (fuzzseed.Sync;
// QNBD_WRITE_FUZZ_SEEDS=1 writes them instead).
func TestFuzzCheckSeeds(t *testing.T) {
	fuzzseed.Sync(t, filepath.Join("testdata", "fuzz"), ccFuzzSeeds(t))
}

// ccSeedSnapshotDate is the creation time every seed's snapshot is given (2026-01-01 UTC), so
// that the images come out the same on every run.
const ccSeedSnapshotDate = 1767225600

// ccFuzzSeeds makes small images (512-byte and 4 KiB clusters, so that each seed is a few KiB)
// as FuzzCheck seeds.
func ccFuzzSeeds(t *testing.T) []fuzzseed.Seed {
	tmp := t.TempDir()
	type seed struct {
		name, opts, size string
		io               []string
		after            func(p string)
	}
	w := []string{"write -P 0x11 0 2k", "write -P 0x22 20k 1k", "write -z 40k 4k"}
	seeds := []seed{
		{name: "c512", opts: "cluster_size=512", size: "64k", io: w},
		{name: "c512-v2", opts: "cluster_size=512,compat=0.10", size: "64k", io: w},
		{name: "c512-refbits1", opts: "cluster_size=512,refcount_bits=1", size: "64k", io: w},
		{name: "c512-refbits64", opts: "cluster_size=512,refcount_bits=64", size: "64k", io: w},
		{name: "c512-dirty", opts: "cluster_size=512,lazy_refcounts=on", size: "64k", io: w[:1], after: func(p string) {
			// Killed with writes done and refcounts not: dirty, refcounts too low.
			if exec.Command("qemu-io", "-f", "qcow2", "-c", "write -P 0x77 30k 2k", "-c", "sigraise 9", p).Run() == nil {
				t.Fatal("qemu-io was not killed")
			}
		}},
		{name: "c16k-extl2", opts: "cluster_size=16k,extended_l2=on", size: "1M", io: []string{"write -P 1 0 1k", "write -z 8k 1k"}},
		{name: "c512-snapshot", opts: "cluster_size=512", size: "64k", io: w, after: func(p string) {
			ccRun(t, "qemu-img", "snapshot", "-c", "snap", p)
			ccIO(t, p, "write -P 0x33 0 1k")
			// The one snapshot's date_sec (bytes 16-19) and date_nsec (20-23): QEMU writes the time.
			m := ccOpenImg(t, p)
			if m.h.SnapshotCount != 1 {
				t.Fatalf("%d snapshots, want 1", m.h.SnapshotCount)
			}
			m.putU64(uint64(m.h.SnapshotsOffset)+16, ccSeedSnapshotDate<<32)
		}},
		{name: "c512-bitmap", opts: "cluster_size=512", size: "64k", io: w, after: func(p string) {
			ccRun(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b")
			ccIO(t, p, "write -P 0x44 8k 2k")
		}},
		{name: "c512-leak", opts: "cluster_size=512", size: "64k", io: append(w, "discard 20k 1k"), after: func(p string) {
			m := ccOpenImg(t, p)
			for c := hostCluster(1); uint64(c) < uint64(ccFileSize(t, p))/512; c++ {
				if m.refcount(c) == 0 {
					m.setRefcount(c, 1)
					break
				}
			}
		}},
		{name: "c512-refcount0", opts: "cluster_size=512", size: "64k", io: w, after: func(p string) {
			m := ccOpenImg(t, p)
			m.setRefcount(m.dataCluster(20<<10), 0)
		}},
		{name: "c512-crosslink", opts: "cluster_size=512", size: "64k", io: w, after: func(p string) {
			m := ccOpenImg(t, p)
			m.putU64(m.l2EntryOff(1024), m.u64(m.l2EntryOff(20<<10)))
		}},
	}
	var out []fuzzseed.Seed
	add := func(name, path string) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fuzzseed.Seed{Target: "FuzzCheck", Name: name, Data: b})
	}
	for _, sd := range seeds {
		p := ccNewImage(t, tmp, sd.name+".qcow2", sd.opts, sd.size, sd.io...)
		if sd.after != nil {
			sd.after(p)
		}
		add(sd.name, p)
	}
	// A compressed image (convert -c needs a source).
	src := ccNewImage(t, tmp, "src.qcow2", "", "64k", "write -P 0x55 0 16k", "write -P 0x66 32k 3k")
	p := filepath.Join(tmp, "compressed.qcow2")
	ccRun(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", "cluster_size=4k", src, p)
	add("c4k-compressed", p)
	return out
}
