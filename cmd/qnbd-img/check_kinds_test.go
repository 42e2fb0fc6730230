// qnbd-img check and check -r against qemu-img on cross-linked, dirty (lazy refcounts),
// corrupt and leaked images: same verdicts and output, and repairs that qemu-img finds clean.
package main

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// Incompatible feature bits of the qcow2 header (at byte 72).
const (
	incompatDirty   = 1 << 0
	incompatCorrupt = 1 << 1
)

// l2EntryOffset returns the file offset of the standard (8-byte) L2 entry that maps guest
// offset g of the qcow2 image at path; g's L2 table must be allocated.
func l2EntryOffset(t *testing.T, path string, g uint64) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bits := uint64(readU32(t, f, 20))
	l1 := readU64(t, f, 40)
	l2 := readU64(t, f, int64(l1+8*(g>>(2*bits-3)))) & 0x00fffffffffffe00
	if l2 == 0 {
		t.Fatalf("%s: no L2 table for guest offset %d", path, g)
	}
	return int64(l2 + 8*((g>>bits)&(1<<(bits-3)-1)))
}

// copyL2Entry makes the L2 entry for guest offset to a copy of the one for guest offset from,
// so that both map the same host cluster.
func copyL2Entry(t *testing.T, path string, from, to uint64) {
	t.Helper()
	src, dst := l2EntryOffset(t, path, from), l2EntryOffset(t, path, to)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	if _, err := f.ReadAt(b[:], src); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(b[:], dst); err != nil {
		t.Fatal(err)
	}
}

// incompatFeatures reads the incompatible feature bits of a version 3 image.
func incompatFeatures(t *testing.T, path string) uint64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return readU64(t, f, 72)
}

// setIncompat sets bits in the incompatible feature field of a version 3 image.
func setIncompat(t *testing.T, path string, bits uint64) {
	t.Helper()
	v := incompatFeatures(t, path) | bits
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [8]byte
	for i := range b {
		b[i] = byte(v >> (56 - 8*i))
	}
	if _, err := f.WriteAt(b[:], 72); err != nil {
		t.Fatal(err)
	}
}

// checkKindImages makes, in dir, one broken image per kind and returns their names with
// qemu-img check's exit status on each:
//   - cross-linked: guest cluster 2M (unallocated) mapped to guest cluster 0's host cluster;
//   - cross-linked-leak: guest cluster 8M (allocated) mapped to guest cluster 0's, so its
//     own cluster is leaked too;
//   - dirty-lazy-refcounts: the corpus's lazy-refcounts image left dirty by a killed qemu-io;
//   - dirty-poked: a lazy-refcounts image with the dirty bit set, a data cluster's refcount
//     cleared and one cluster leaked, as a crash can leave it;
//   - dirty-consistent: the dirty bit set on an image whose refcounts are right;
//   - leaked and corrupt (refcount 0 on a data cluster), from brokenImages.
func checkKindImages(t *testing.T, dir string) map[string]int {
	t.Helper()
	brokenImages(t, dir)
	for _, n := range []string{"cross-linked.qcow2", "cross-linked-leak.qcow2"} {
		sh(t, dir, "cp", "clean.qcow2", n)
	}
	copyL2Entry(t, filepath.Join(dir, "cross-linked.qcow2"), 0, 2<<20)
	copyL2Entry(t, filepath.Join(dir, "cross-linked-leak.qcow2"), 0, 8<<20)

	killed := corpus.Lookup(corpus.Shared(t), "dirty-lazy-refcounts")
	if killed == nil {
		t.Fatal("the corpus has no dirty-lazy-refcounts image")
	}
	if _, err := corpus.Copy(context.Background(), killed, dir); err != nil {
		t.Fatal(err)
	}

	for _, n := range []string{"dirty-poked.qcow2", "dirty-consistent.qcow2"} {
		sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on", n, "16M")
		sh(t, dir, "qemu-io", "-c", "write -P 0x3c 0 192k", "-c", "write -P 0xc3 5M 64k", n)
		setIncompat(t, filepath.Join(dir, n), incompatDirty)
	}
	poked := filepath.Join(dir, "dirty-poked.qcow2")
	setRefcount16(t, poked, firstDataCluster(t, poked), 0)
	st, err := os.Stat(poked)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(poked, st.Size()+65536); err != nil {
		t.Fatal(err)
	}
	setRefcount16(t, poked, uint64(st.Size())/65536, 1)

	kinds := map[string]int{
		"cross-linked.qcow2":         2,
		"cross-linked-leak.qcow2":    2,
		"dirty-lazy-refcounts.qcow2": 2,
		"dirty-poked.qcow2":          2,
		"dirty-consistent.qcow2":     0,
		"leaked.qcow2":               3,
		"corrupt.qcow2":              2,
	}
	for n := range kinds {
		if dirty := incompatFeatures(t, filepath.Join(dir, n))&incompatDirty != 0; dirty != strings.HasPrefix(n, "dirty") {
			t.Fatalf("%s: dirty bit %v", n, dirty)
		}
	}
	return kinds
}

// TestOracleCheckKinds: on each kind of broken image, qnbd-img check gives qemu-img check's
// exit status and output (human, JSON, quiet); check -r leaks and -r all, each tool on its own
// copy, print the same; after -r all, qemu-img check finds both copies clean, neither is
// dirty or marked corrupt, our check agrees, and both copies read the same.
func TestOracleCheckKinds(t *testing.T) {
	t.Parallel()
	src := t.TempDir()
	for img, code := range checkKindImages(t, src) {
		t.Run(img, func(t *testing.T) {
			t.Parallel()
			checkKind(t, isolated(t, src, img), img, code)
		})
	}
}

// checkKind compares check and check -r on the broken image img in dir.
func checkKind(t *testing.T, dir, img string, code int) {
	for _, args := range [][]string{{"check", img}, {"check", "--output=json", img}, {"check", "-q", img}} {
		if r := same(t, dir, args...); r.code != code {
			t.Errorf("%q: exit %d, want %d", args, r.code, code)
		}
	}
	for _, mode := range []string{"leaks", "all"} {
		for _, output := range []string{"human", "json"} {
			args := []string{"check", "-r", mode, "--output=" + output}
			want, got := onCopies(t, dir, img, args...)
			if got != want {
				if later, ok := rebuildEndsLater(want, got); ok {
					t.Logf("check -r %s %s (%s): known difference, the rebuilt refcount structures end the image %d bytes later than qemu-img's", mode, img, output, later)
				} else {
					t.Errorf("check -r %s %s (%s):\nqemu-img: %v\nqnbd-img: %v", mode, img, output, want, got)
				}
			}
			if mode != "all" {
				continue
			}
			for _, c := range []string{"q.qcow2", "o.qcow2"} {
				if r := qemu(t, dir, "check", c); r.code != 0 {
					t.Errorf("%s after %s check -r all: qemu-img check says %v", img, map[string]string{"q.qcow2": "qemu-img", "o.qcow2": "qnbd-img"}[c], r)
				}
				if f := incompatFeatures(t, filepath.Join(dir, c)); f&(incompatDirty|incompatCorrupt) != 0 {
					t.Errorf("%s after check -r all (%s): incompatible features %#x", img, c, f)
				}
			}
			same(t, dir, "check", "o.qcow2")
			if r := qemu(t, dir, "compare", "-U", "q.qcow2", "o.qcow2"); r.code != 0 {
				t.Errorf("%s: the two repaired copies differ: %v", img, r)
			}
		}
	}
}

// endOffsetRE matches the image end offset in check's human and JSON output.
var endOffsetRE = regexp.MustCompile(`(Image end offset: |"image-end-offset": )(\d+)`)

// rebuildEndsLater recognises the one known difference in check -r all: when the refcount
// structures are rebuilt, QEMU puts the new refcount blocks in the first free clusters, which
// may be inside the file, and the reftable after them; the engine (qcow2/rebuild.go) puts
// both past the end of the file so that nothing the old image uses is overwritten, so the
// image can end later. It reports whether got differs from want only in a larger image end
// offset after a rebuild, and by how much.
func rebuildEndsLater(want, got result) (int64, bool) {
	const rebuilt = "Rebuilding refcount structure"
	if !strings.Contains(want.stderr, rebuilt) || !strings.Contains(got.stderr, rebuilt) {
		return 0, false
	}
	w, g := endOffsetRE.FindStringSubmatch(want.stdout), endOffsetRE.FindStringSubmatch(got.stdout)
	if w == nil || g == nil {
		return 0, false
	}
	wn, err1 := strconv.ParseInt(w[2], 10, 64)
	gn, err2 := strconv.ParseInt(g[2], 10, 64)
	if err1 != nil || err2 != nil || gn <= wn {
		return 0, false
	}
	got.stdout = strings.Replace(got.stdout, g[0], w[0], 1)
	return gn - wn, got == want
}
