// Scripted qemu-io sessions (writes, FUA writes, vectored and asynchronous writes, zero
// writes with and without unmap, discards, flushes) run once through qnbd and once by
// qemu-io directly on a copy of the same image: the two copies must read the same.
package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"sync/atomic"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// ioScript returns a qemu-io session for an image of size bytes with clusters of c bytes,
// whose L2 tables each map l2span bytes. Offsets are chosen relative to the cluster size:
// partial clusters, cluster-crossing and L2-table-crossing writes, zero writes (aligned and
// not, with and without unmap) over data and over unwritten ranges, cluster-aligned discards
// (what a partly discarded cluster reads as is left to the format), FUA writes and flushes,
// and writes at the very end of the image. Commands that would reach past the end are left
// out, so every image gets a valid script.
func ioScript(size, c, l2span int64) []string {
	var cmds []string
	add := func(off, n int64, f string, args ...any) {
		if off < 0 || n <= 0 || off+n > size {
			return
		}
		cmds = append(cmds, fmt.Sprintf(f, args...))
	}
	w := func(pat int, off, n int64, flags string) {
		add(off, n, "write %s-P %#x %d %d", flags, pat, off, n)
	}
	z := func(unmap bool, off, n int64) {
		f := ""
		if unmap {
			f = "-u "
		}
		add(off, n, "write -z %s%d %d", f, off, n)
	}
	w(0x11, 0, 3*c+1234, "")
	w(0x22, c/2, c, "")
	w(0x23, 700, 3, "")
	add(l2span-c/2, c+512, "writev -P 0x33 %d %d 512", l2span-c/2, c)
	z(false, 2*c+100, 2*c)
	cmds = append(cmds, "flush")
	w(0x44, 8*c, 6*c, "-f ")
	z(true, 8*c, 2*c)
	z(true, 10*c+c/4, c)
	z(false, 12*c, c)
	w(0x45, 16*c, 6*c, "")
	add(16*c, 4*c, "discard %d %d", 16*c, 4*c)
	z(true, 24*c, 3*c)  // never written
	z(false, 28*c, 2*c) // never written
	add(32*c, 2*c, "discard %d %d", 32*c, 2*c)
	cmds = append(cmds, "flush")
	mid := size / 2 / c * c
	w(0x55, mid, 5*c+3, "")
	add(mid+c, c, "aio_write -P 0x66 %d %d", mid+c, c)
	add(mid+3*c, 2*c, "aio_write -P 0x67 %d %d", mid+3*c, 2*c)
	cmds = append(cmds, "aio_flush")
	z(true, mid+2*c, 2*c)
	add(mid+4*c, c, "discard %d %d", mid+4*c, c)
	w(0x77, size-c-700, c+700, "-f ")
	w(0x78, size-1, 1, "")
	add(size/c*c-c, c, "discard %d %d", size/c*c-c, c)
	// Regions the corpus writes to in most images (see internal/testing/corpus Specs): overwrite
	// part of them, zero and discard some, so data, zero and compressed clusters and
	// backing-file data are changed too.
	for _, base := range []int64{1 << 20, 2 << 20, 4 << 20, 8 << 20} {
		w(0x80+int(base>>20), base+c/3, c, "")
		z(false, base+2*c, c/2)
		add(base+4*c, c, "discard %d %d", base+4*c, c)
		z(true, base+5*c, c)
	}
	cmds = append(cmds, "flush")
	return cmds
}

// qemuIO runs qemu-io -f format -d unmap with cmds on target and fails the test unless
// every command succeeded (qemu-io reports command failures on stdout but exits 0, so the
// output is checked too).
func qemuIO(t *testing.T, format, target string, cmds []string) {
	t.Helper()
	args := []string{"qemu-io", "-f", format, "-d", "unmap"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out := run(t, append(args, target)...)
	for _, l := range lines(out) {
		if !isQemuIOProgress(l) {
			t.Fatalf("qemu-io on %s: %s\nfull output:\n%s", target, l, out)
		}
	}
}

// qemuIOResult and qemuIOStats match qemu-io's normal result lines; anything else is an
// error message.
var (
	qemuIOResult = regexp.MustCompile(`^(wrote|discard|read) (\d+)/(\d+) bytes at offset \d+$`)
	qemuIOStats  = regexp.MustCompile(`^[0-9.]+ (bytes|[KMGTPE]iB), \d+ ops; `)
)

// isQemuIOProgress reports whether l is one of qemu-io's normal result lines ("wrote N/N
// bytes at offset O", "N KiB, X ops; ...") for a request done in full.
func isQemuIOProgress(l string) bool {
	if m := qemuIOResult.FindStringSubmatch(l); m != nil {
		return m[2] == m[3]
	}
	return qemuIOStats.MatchString(l)
}

// runScriptBothWays copies img twice, runs cmds with qemu-io directly on one copy and
// through a qnbd serving the other (--discard=unmap, raw NBD from qemu-io's point of view),
// stops qnbd (exit 0), and requires the copies to read the same and qcow2 copies to check
// clean.
func runScriptBothWays(t *testing.T, img *corpus.Image, cmds []string) {
	t.Helper()
	ctx := t.Context()
	direct, err := corpus.Copy(ctx, img, mkdirIn(t, "direct"))
	if err != nil {
		t.Fatal(err)
	}
	served, err := corpus.Copy(ctx, img, mkdirIn(t, "served"))
	if err != nil {
		t.Fatal(err)
	}
	qemuIO(t, img.Format, direct.Path, cmds)
	// The script changes every image, so the final compare is able to fail.
	if same, err := corpus.Compare(ctx, img.Path, img.Format, direct.Path, img.Format); err != nil || same {
		t.Fatalf("the script left %s unchanged (compare: %v, %v)", img.Name, same, err)
	}

	s := startQnbd(t, serverConfig{Args: []string{"-f", img.Format, "--discard=unmap", served.Path}})
	qemuIO(t, "raw", s.URI(""), cmds)
	s.Stop()
	if img.Format == "qcow2" {
		requireClean(t, direct.Path)
		requireClean(t, served.Path)
	}
	requireSame(t, direct.Path, img.Format, served.Path, img.Format)
}

// mkdirIn makes a subdirectory name of a fresh test directory.
func mkdirIn(t *testing.T, name string) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), name)
	must(t, mkdirAll(d))
	return d
}

// TestScriptRaw runs the qemu-io script on a raw image with data and holes.
func TestScriptRaw(t *testing.T) {
	t.Parallel()
	src := sparseSource(t, t.TempDir(), 16<<20)
	img := &corpus.Image{Name: "raw", Path: src, Format: "raw", Size: 16 << 20}
	runScriptBothWays(t, img, ioScript(img.Size, 4096, 2<<20))
}

// scriptsRun counts the scripts run both ways, for the log.
var scriptsRun atomic.Int64

// TestScriptCorpus runs the qemu-io script on copies of every qcow2 corpus image: every
// cluster size from 512 B to 2 MiB with refcount widths from 1 to 64 bits, version 2,
// extended L2, lazy refcounts (clean and dirty), backing chains, external data files
// (also data_file_raw), compressed clusters, an internal snapshot, preallocation, zero
// clusters and a 4 TiB image.
func TestScriptCorpus(t *testing.T) {
	imgs := corpus.Shared(t)
	t.Cleanup(func() { t.Logf("%d qemu-io scripts run through qnbd and directly", scriptsRun.Load()) })
	for _, img := range imgs {
		if img.Format != "qcow2" {
			continue
		}
		t.Run(img.Name, func(t *testing.T) {
			t.Parallel()
			entries := img.ClusterSize / 8
			if img.Has(corpus.FeatureExtendedL2) {
				entries = img.ClusterSize / 16
			}
			cmds := ioScript(img.Size, img.ClusterSize, entries*img.ClusterSize)
			runScriptBothWays(t, img, cmds)
			scriptsRun.Add(1)
		})
	}
}
