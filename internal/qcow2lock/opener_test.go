// Opener with the real engine: every host file of an open image carries its locks for as long
// as the image is open, and a second writer is refused with QEMU's message.
package qcow2lock

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/qcow2"
)

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %q: %v\n%s", args, err, out)
	}
}

func open(t *testing.T, p string, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestOpenerLocksEveryFile(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	qemuImg(t, "create", "-q", "-f", "raw", p("base.raw"), "1M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", p("base.raw"), "-F", "raw", p("mid.qcow2"))
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", p("mid.qcow2"), "-F", "qcow2", p("top.qcow2"))
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+p("data.bin"), p("df.qcow2"), "1M")

	rw := imagelock.Request{Perm: imagelock.ConsistentRead | imagelock.Write, Shared: imagelock.All &^ imagelock.Resize}
	for _, tc := range []struct {
		image string
		req   imagelock.Request
		ro    bool
		files map[string]imagelock.Kind
	}{
		{"top.qcow2", rw, false, map[string]imagelock.Kind{"top.qcow2": imagelock.Qcow2Image, "mid.qcow2": imagelock.Qcow2Backing, "base.raw": imagelock.RawBacking}},
		{"df.qcow2", rw, false, map[string]imagelock.Kind{"df.qcow2": imagelock.Qcow2Image, "data.bin": imagelock.DataFile}},
		{"df.qcow2", imagelock.Request{Perm: imagelock.ConsistentRead, Shared: imagelock.All}, true, map[string]imagelock.Kind{"df.qcow2": imagelock.Qcow2Image, "data.bin": imagelock.DataFile}},
	} {
		img, err := qcow2.Open(p(tc.image), qcow2.OpenOptions{ReadOnly: tc.ro, Opener: Opener(tc.req, nil)})
		if err != nil {
			t.Fatalf("open %s: %v", tc.image, err)
		}
		for name, kind := range tc.files {
			f := open(t, p(name), os.O_RDONLY)
			held, notShared, err := imagelock.Others(f)
			if err != nil {
				t.Fatal(err)
			}
			perm, shared := tc.req.For(kind)
			if held != perm || notShared != imagelock.All&^shared {
				t.Errorf("%s open, %s (%s): holds %q, does not share %q; want %q, %q",
					tc.image, name, kind, held, notShared, perm, imagelock.All&^shared)
			}
		}
		// A second writer of the same image is refused, and the refusal leaves no locks.
		if !tc.ro {
			_, err := qcow2.Open(p(tc.image), qcow2.OpenOptions{Opener: Opener(rw, nil)})
			var le *imagelock.Error
			if !errors.As(err, &le) || le.Error() != `Failed to get "write" lock` {
				t.Errorf("second read-write open of %s: %v, want the write lock conflict", tc.image, err)
			}
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		for name := range tc.files {
			held, notShared, err := imagelock.Others(open(t, p(name), os.O_RDONLY))
			if err != nil || held != 0 || notShared != 0 {
				t.Errorf("%s after Close: still holds %q, does not share %q (%v)", name, held, notShared, err)
			}
		}
	}
}

// TestOpenerNeedsFile: a Storage that cannot give its file is refused, not used unlocked.
func TestOpenerNeedsFile(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", img, "1M")
	closed := false
	hide := func(path string, o qcow2.FileOptions) (qcow2.Storage, error) {
		s, err := qcow2.OpenFile(path, o)
		if err != nil {
			return nil, err
		}
		return hidden{s, &closed}, nil
	}
	_, err := qcow2.Open(img, qcow2.OpenOptions{Opener: Opener(imagelock.Request{Perm: imagelock.ConsistentRead, Shared: imagelock.All}, hide)})
	if err == nil || !closed {
		t.Fatalf("open through a Storage without File: err %v, storage closed %v; want an error and a closed storage", err, closed)
	}
}

// hidden is a Storage that does not expose its file.
type hidden struct {
	*qcow2.FileStorage
	closed *bool
}

func (h hidden) File() {} // not FileHolder's signature

func (h hidden) Close() error {
	*h.closed = true
	return h.FileStorage.Close()
}
