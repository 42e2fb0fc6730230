// Shared: one corpus per machine, built once under a file lock; Copy for writable copies.
package corpus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// generatorVersion changes whenever Build's behaviour changes in a way the catalogue data
// does not show, so that stale shared corpora are not reused.
const generatorVersion = 1

const manifestName = "manifest.json"

var shared struct {
	once sync.Once
	imgs []*Image
	err  error
}

// Shared returns the whole catalogue, built once per machine (and per catalogue version) in
// a directory under os.TempDir(), and at most once per process. The images must not be
// modified; Copy them first. It fails the test if the corpus cannot be built.
func Shared(tb testing.TB) []*Image {
	tb.Helper()
	shared.once.Do(func() {
		root, err := SharedDir()
		if err != nil {
			shared.err = err
			return
		}
		shared.imgs, _, shared.err = loadOrBuild(context.Background(), root)
	})
	if shared.err != nil {
		tb.Fatalf("corpus: %v", shared.err)
	}
	return shared.imgs
}

// Lookup returns the image called name, or nil.
func Lookup(imgs []*Image, name string) *Image {
	for _, img := range imgs {
		if img.Name == name {
			return img
		}
	}
	return nil
}

// WithFeature returns the images that have feature f.
func WithFeature(imgs []*Image, f string) []*Image {
	var out []*Image
	for _, img := range imgs {
		if img.Has(f) {
			out = append(out, img)
		}
	}
	return out
}

// SharedDir is the directory Shared builds in: its name hashes the catalogue, the generator
// version and the version of qemu-img that builds it.
func SharedDir() (string, error) {
	ver, err := runTool(context.Background(), "qemu-img", "--version")
	if err != nil {
		return "", err
	}
	spec, err := json.Marshal(Specs())
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d\n%s\n", generatorVersion, ver)
	h.Write(spec)
	return filepath.Join(os.TempDir(), "qnbd-corpus-"+hex.EncodeToString(h.Sum(nil))[:16]), nil
}

// loadOrBuild returns the corpus in root, building it first unless a complete one is there.
// A lock file next to root serialises processes. built reports whether this call built it.
// names selects specs as for Build (tests build a few; Shared builds all).
func loadOrBuild(ctx context.Context, root string, names ...string) (imgs []*Image, built bool, err error) {
	lock, err := os.OpenFile(root+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, false, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, false, fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	if imgs, err := loadManifest(root); err == nil {
		return imgs, false, nil
	}
	// Absent, partial or stale: build from scratch in place (data-file names are absolute, so
	// the corpus cannot be built elsewhere and moved).
	if err := os.RemoveAll(root); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, false, err
	}
	imgs, err = Build(ctx, root, names...)
	if err != nil {
		return nil, false, err
	}
	m := manifest{Images: imgs, Files: map[string]fileStamp{}}
	for _, img := range imgs {
		for _, f := range img.Files() {
			if m.Files[f], err = stampOf(f); err != nil {
				return nil, false, err
			}
		}
	}
	b, err := json.MarshalIndent(m, "", " ")
	if err != nil {
		return nil, false, err
	}
	tmp := filepath.Join(root, manifestName+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return nil, false, err
	}
	return imgs, true, os.Rename(tmp, filepath.Join(root, manifestName))
}

// manifest records a finished corpus and the size and modification time of each file, so
// that a corpus some test modified by mistake is rebuilt rather than trusted.
type manifest struct {
	Images []*Image
	Files  map[string]fileStamp
}

type fileStamp struct {
	Size, ModTimeNs int64
}

func stampOf(path string) (fileStamp, error) {
	st, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{Size: st.Size(), ModTimeNs: st.ModTime().UnixNano()}, nil
}

// loadManifest reads a finished corpus and checks that its files are there, unchanged.
func loadManifest(root string) ([]*Image, error) {
	b, err := os.ReadFile(filepath.Join(root, manifestName))
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for _, img := range m.Images {
		for _, f := range img.Files() {
			st, err := stampOf(f)
			if err != nil {
				return nil, err
			}
			if st != m.Files[f] {
				return nil, fmt.Errorf("corpus: %s changed since it was built", f)
			}
		}
	}
	return m.Images, nil
}

// Copy copies img with its backing chain and data files into dir (which must exist) and
// returns the copy. Backing references stay relative; data-file references are rewritten to
// the copies with qemu-img amend.
func Copy(ctx context.Context, img *Image, dir string) (*Image, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	var backing *Image
	if img.Backing != nil {
		if backing, err = Copy(ctx, img.Backing, dir); err != nil {
			return nil, err
		}
	}
	c := *img
	c.Backing = backing
	c.Features = append([]string(nil), img.Features...)
	c.Ops = append([]Op(nil), img.Ops...)
	c.Path = filepath.Join(dir, filepath.Base(img.Path))
	if err := copyFile(img.Path, c.Path); err != nil {
		return nil, err
	}
	if img.DataFile != "" {
		c.DataFile = filepath.Join(dir, filepath.Base(img.DataFile))
		if err := copyFile(img.DataFile, c.DataFile); err != nil {
			return nil, err
		}
		if _, err := runTool(ctx, "qemu-img", "amend", "-f", "qcow2", "-o", "data_file="+c.DataFile, c.Path); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

func copyFile(src, dst string) error {
	if src == dst {
		return errors.New("corpus: copying a file onto itself: " + src)
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
