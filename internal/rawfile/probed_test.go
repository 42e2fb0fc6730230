// Tests of the raw backend's sector accounting and of a probed file's block-0 guard
// (docs/probing.md); e2e/probed_raw_test.go compares the same with qemu-nbd.
package rawfile

import (
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/server"
)

func fileLen(t *testing.T, p string) int64 {
	t.Helper()
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func TestSizeRoundsUpToASector(t *testing.T) {
	for _, probed := range []bool{false, true} {
		for size, want := range map[int64]uint64{0: 0, 1: 512, 1000: 1024, 1024: 1024, 1<<20 + 100: 1<<20 + 512} {
			f, _ := newFile(t, size, Options{Probed: probed, ReadOnly: true})
			if f.Size() != want {
				t.Errorf("probed %v: a %d-byte file is exported as %d bytes, want %d", probed, size, f.Size(), want)
			}
		}
	}
}

func TestMinBlockSizeOnlyWhenProbed(t *testing.T) {
	if f, _ := newFile(t, 4096, Options{}); f.MinBlockSize() != 0 {
		t.Errorf("format given: minimum block size %d, want 0", f.MinBlockSize())
	}
	if f, _ := newFile(t, 4096, Options{Probed: true, ReadOnly: true}); f.MinBlockSize() != 512 {
		t.Errorf("probed: minimum block size %d, want 512", f.MinBlockSize())
	}
}

func TestTailReadsAsZeros(t *testing.T) {
	f, p := newFile(t, 1000, Options{})
	if err := os.WriteFile(p, make([]byte, 1000), 0o644); err != nil {
		t.Fatal(err)
	}
	b := []byte("dirty buffer, must be cleared...")
	if err := f.ReadAt(ctx, b[:24], 1000); err != nil || string(b[:24]) != string(make([]byte, 24)) {
		t.Errorf("tail read: %q, %v", b[:24], err)
	}
}

// The file's length after a change reaching the tail of a 1000-byte file, as measured on
// qemu-nbd 7.2 (the table in docs/probing.md).
func TestTailChangesGrowTheFileAsQemuDoes(t *testing.T) {
	type change func(f *File) error
	write := func(off uint64) change {
		return func(f *File) error { return f.WriteAt(ctx, []byte{1}, off, false) }
	}
	zero := func(off, n uint64, noHole bool) change {
		return func(f *File) error { return f.WriteZeroes(ctx, off, n, server.ZeroFlags{NoHole: noHole}) }
	}
	trim := func(off, n uint64) change {
		return func(f *File) error { return f.Trim(ctx, off, n, false) }
	}
	for _, tt := range []struct {
		name        string
		do          change
		raw, probed int64
	}{
		{"write the last byte", write(1023), 1024, 1024},
		{"write at 1000", write(1000), 1001, 1024},
		{"write at 600", write(600), 1000, 1024},
		{"write at 10", write(10), 1000, 1000},
		{"zero the tail", zero(1000, 24, false), 1000, 1024},
		{"zero the tail, no hole", zero(1000, 24, true), 1024, 1024},
		{"zero [1000, 1010)", zero(1000, 10, false), 1000, 1024},
		{"zero the last sector", zero(512, 512, false), 1000, 1000},
		{"zero the last sector, no hole", zero(512, 512, true), 1024, 1024},
		{"trim the tail", trim(1000, 24), 1000, 1000},
	} {
		for _, probed := range []bool{false, true} {
			f, p := newFile(t, 1000, Options{Probed: probed})
			if err := tt.do(f); err != nil {
				t.Errorf("%s (probed %v): %v", tt.name, probed, err)
				continue
			}
			want := tt.raw
			if probed {
				want = tt.probed
			}
			if got := fileLen(t, p); got != want {
				t.Errorf("%s (probed %v): file is %d bytes, want %d", tt.name, probed, got, want)
			}
		}
	}
}

// A probed file refuses changes that would make block 0 probe as another format (writes,
// write-zeroes and trims alike); the same file opened with its format given does not.
func TestProbedFileGuardsBlock0(t *testing.T) {
	hdr := make([]byte, 512)
	copy(hdr, "QFI\xfb\x00\x00\x00\x03")
	f, _ := newFile(t, 1<<20, Options{Probed: true})
	if err := f.WriteAt(ctx, hdr, 0, false); !errors.Is(err, syscall.EPERM) {
		t.Errorf("qcow2 header: %v, want EPERM", err)
	}
	if err := f.WriteAt(ctx, hdr[4:8], 4, false); err != nil {
		t.Errorf("the version alone: %v", err)
	}
	if err := f.WriteAt(ctx, hdr[:4], 0, false); !errors.Is(err, syscall.EPERM) {
		t.Errorf("completing the header: %v, want EPERM", err)
	}
	bochs := make([]byte, 512)
	copy(bochs, "Bochs Virtual HD Imagex")
	copy(bochs[32:], "Redolog")
	copy(bochs[48:], "Growing")
	bochs[66] = 2
	if err := f.WriteAt(ctx, bochs, 0, false); err != nil {
		t.Fatalf("unterminated bochs magic: %v", err)
	}
	if err := f.Trim(ctx, 22, 1, false); !errors.Is(err, syscall.EPERM) {
		t.Errorf("trim completing a bochs header: %v, want EPERM", err)
	}
	if err := f.WriteZeroes(ctx, 22, 1, server.ZeroFlags{}); !errors.Is(err, syscall.EPERM) {
		t.Errorf("zero completing a bochs header: %v, want EPERM", err)
	}
	if err := f.WriteZeroes(ctx, 0, 512, server.ZeroFlags{}); err != nil {
		t.Errorf("zeroing block 0: %v", err)
	}
	if err := f.WriteAt(ctx, hdr, 4096, false); err != nil {
		t.Errorf("a header away from block 0: %v", err)
	}

	g, _ := newFile(t, 1<<20, Options{})
	if err := g.WriteAt(ctx, hdr, 0, false); err != nil {
		t.Errorf("format given: %v", err)
	}
}
