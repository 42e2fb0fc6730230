// Whole-image copies through qnbd with nbdcopy and qemu-img convert, in both directions,
// over Unix sockets and loopback TCP, compared with qemu-img compare.
package e2e

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// sparseSource writes a raw file of size bytes with stamped data at a few places (some not
// aligned to anything) and holes between them, and returns its path.
func sparseSource(t *testing.T, dir string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, "src.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	must(t, f.Truncate(size))
	for i, r := range [][2]int64{{0, 65536}, {1<<20 + 511, 300000}, {5 << 20, 3 << 20}, {size - 4097, 4097}} {
		if _, err := f.WriteAt(stamp(byte(40+i), r[0], int(r[1])), r[0]); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// TestNbdcopyRawOut copies a read-only raw export out with nbdcopy (several connections,
// many requests in flight) and compares it with the served file.
func TestNbdcopyRawOut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := sparseSource(t, dir, 24<<20)
	s := startQnbd(t, serverConfig{Args: []string{"-r", "-e", "8", "-f", "raw", src}})
	out := filepath.Join(dir, "out.raw")
	run(t, "nbdcopy", s.URI(""), out)
	requireSame(t, src, "raw", out, "raw")
}

// TestNbdcopyIn copies a raw file into an export of each writable format with nbdcopy
// (multi-conn, flushed) and compares the image with the file afterwards.
func TestNbdcopyIn(t *testing.T) {
	for _, format := range writableFormats {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			const size = 24 << 20
			src := sparseSource(t, dir, size)
			img := newImage(t, format, size>>20, "")
			s := startQnbd(t, serverConfig{Args: []string{"-e", "8", "-f", format, img}})
			run(t, "nbdcopy", "--flush", src, s.URI(""))
			// Read it back through the server too, with a different client.
			out := filepath.Join(dir, "back.raw")
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", s.URI(""), out)
			finishImage(t, s, format, img)
			requireSame(t, src, "raw", img, format)
			requireSame(t, src, "raw", out, "raw")
		})
	}
}

// TestQemuImgConvertNBD converts a raw file into an export over loopback TCP (qemu-img
// convert -n to nbd://) and back out to a file over a Unix socket, comparing both ways,
// and compares the export with the file through qemu-img compare's NBD client.
func TestQemuImgConvertNBD(t *testing.T) {
	for _, format := range writableFormats {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			const size = 16 << 20
			src := sparseSource(t, dir, size)
			img := newImage(t, format, size>>20, "")
			tcp := startQnbd(t, serverConfig{TCP: true, Args: []string{"-f", format, img}})
			run(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, tcp.URI(""))
			requireSame(t, src, "raw", tcp.URI(""), "raw")
			tcp.Stop()

			unix := startQnbd(t, serverConfig{Args: []string{"-r", "-f", format, img}})
			out := filepath.Join(dir, "out.raw")
			run(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", unix.URI(""), out)
			requireSame(t, src, "raw", out, "raw")
			unix.Stop()
			if format == "qcow2" {
				requireClean(t, img)
			}
			requireSame(t, src, "raw", img, format)
		})
	}
}

// nbdcopyCorpus names the corpus images copied out with nbdcopy: one of each family (every
// image is already compared read-only with qemu-img compare; these add nbdcopy's
// multi-connection, many-requests-in-flight, block-status-driven sparse copy).
var nbdcopyCorpus = []string{
	"cluster-512-refcount-1", "cluster-2m-refcount-64", "v2-cluster-4k", "extended-l2-64k",
	"extended-l2-backing", "compressed-zstd-64k", "compressed-zlib-512", "backing-chain-3",
	"overlay-larger", "data-file", "data-file-raw", "internal-snapshot", "prealloc-metadata",
	"zero-clusters", "discard", "odd-size-4k", "dirty-lazy-refcounts",
}

// TestNbdcopyCorpusOut copies corpus images out of a read-only qnbd (four connections) with
// nbdcopy and compares each copy with the image as QEMU reads it.
func TestNbdcopyCorpusOut(t *testing.T) {
	imgs := corpus.Shared(t)
	for _, name := range nbdcopyCorpus {
		img := corpus.Lookup(imgs, name)
		if img == nil {
			t.Fatalf("corpus image %s is missing", name)
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := startQnbd(t, serverConfig{Args: []string{"-r", "-e", "4", "-f", img.Format, img.Path}})
			out := filepath.Join(t.TempDir(), "out.raw")
			run(t, "nbdcopy", "--connections=4", "--requests=32", s.URI(""), out)
			requireSame(t, img.Path, img.Format, out, "raw")
		})
	}
}
