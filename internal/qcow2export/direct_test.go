// O_DIRECT as cmd/qnbd asks for it (qcow2.FileOptions.Direct, cache=none and directsync): the
// descriptor is O_DIRECT, and a qcow2 image written through it is one qemu-img accepts. (The aligned storage itself is tested in qcow2.)
package qcow2export

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/qnbd/qnbd/qcow2"
)

// TestDirectFilesAreODirect: the files opened with FileOptions.Direct really bypass the page
// cache, with the engine's aligned storage doing the I/O.
func TestDirectFilesAreODirect(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	fs, err := qcow2.OpenFile(p, qcow2.FileOptions{Create: true, Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	s := qcow2.Storage(fs)
	flags, err := unix.FcntlInt(fs.File().Fd(), unix.F_GETFL, 0)
	if err != nil || flags&unix.O_DIRECT == 0 || fs.DirectAlign() == 0 {
		t.Errorf("flags %#x, %v, alignment %d", flags, err, fs.DirectAlign())
	}
	if _, err := s.WriteAt([]byte("x"), 1000); err != nil {
		t.Errorf("unaligned write: %v", err)
	}
}

// TestDirectImage writes a qcow2 image opened with FileOptions.Direct (512-byte and 64 KiB clusters)
// and lets qemu-img judge it.
func TestDirectImage(t *testing.T) {
	for _, cs := range []string{"512", "65536"} {
		t.Run(cs, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, "d.qcow2")
			qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "cluster_size="+cs, p, "4M")
			img, err := qcow2.Open(p, qcow2.OpenOptions{File: qcow2.FileOptions{Direct: true}})
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
			if err := img.Zero(1<<20, 256<<10, qcow2.ZeroMayUnmap); err != nil {
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
