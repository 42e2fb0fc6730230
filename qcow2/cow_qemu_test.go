// Copy-on-write of extended-L2 clusters shared with a snapshot, against qemu-io: which
// subclusters the new cluster gets, and how they map afterwards.
package qcow2

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSharedSubclusterCOWMatchesQemu writes into extended-L2 clusters that an internal
// snapshot shares (data, zero and unallocated subclusters mixed; with and without a backing
// file), once with qemu-io and once with the engine, each write on fresh copies, and
// requires the same qemu-img map (offsets included), check verdict and contents. QEMU copies
// everything from the first allocated or written subcluster to the last into the new
// cluster, so zero and unallocated subclusters in between become data.
func TestSharedSubclusterCOWMatchesQemu(t *testing.T) {
	const k = 1 << 10
	// Cluster 32k, subclusters 1k. Cluster 0: data sc 0, zero sc 4, data sc 8. Cluster 1:
	// data sc 8-9. Cluster 2: data sc 31. Cluster 3: zero bits only. Cluster 4: sc 3 zero,
	// the rest unallocated, with a host cluster (written, then zeroed without unmap).
	prefill := []string{
		"write -P 1 0 1k", "write -z 4k 1k", "write -P 2 8k 1k",
		"write -P 3 40k 2k", "write -P 4 95k 1k", "write -z 96k 32k",
		"write -P 5 131k 1k", "write -z 128k 32k", "write -z -u 131k 1k",
	}
	writes := []struct{ off, n uint64 }{
		{16*k + 10, 100},          // after the last allocated subcluster
		{2 * k, 512},              // between two allocated ones, over unallocated
		{4*k + 100, 200},          // inside the zero subcluster
		{33 * k, 1000},            // before the first allocated one
		{64*k + 100, 100},         // the first subcluster, the last is allocated
		{30 * k, 6 * k},           // across clusters 0 and 1
		{100 * k, 1 * k},          // a cluster of zero bits
		{128*k + 10*k + 1, 3 * k}, // a cluster with a host but nothing allocated
	}
	for _, backing := range []bool{false, true} {
		t.Run(fmt.Sprintf("backing=%v", backing), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			opts := "extended_l2=on,cluster_size=32k"
			if backing {
				b := engCreate(t, dir, "base.qcow2", "", "1M")
				engQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 9 0 1M", b)
				opts += ",backing_file=" + b + ",backing_fmt=qcow2"
			}
			orig := engCreate(t, dir, "img.qcow2", opts, "1M")
			args := []string{"-f", "qcow2"}
			for _, c := range prefill {
				args = append(args, "-c", c)
			}
			engQemu(t, "qemu-io", append(args, orig)...)
			engQemu(t, "qemu-img", "snapshot", "-c", "s", orig)
			for _, w := range writes {
				cmd := fmt.Sprintf("write -P 7 %d %d", w.off, w.n)
				theirs := copyImage(t, orig, t.TempDir(), false)
				ours := copyImage(t, orig, t.TempDir(), false)
				engQemu(t, "qemu-io", "-f", "qcow2", "-c", cmd, theirs)
				img := openTestImage(t, ours, OpenOptions{})
				if _, err := img.WriteAt(fill(0x07, int(w.n)), int64(w.off)); err != nil {
					t.Fatalf("%s: %v", cmd, err)
				}
				if err := img.Close(); err != nil {
					t.Fatal(err)
				}
				sameImageAsQemu(t, cmd, ours, theirs)
			}
		})
	}
}

func fill(b byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = b
	}
	return p
}

// TestZeroCOWLikeQemu: when the parts of a cluster a write must copy read as zeros, QEMU's
// handle_alloc_space zeroes the host window with ZERO_RANGE instead of writing zero bytes, and
// its test is bdrv_co_is_zero_fast on each part (zero clusters and subclusters count, in this
// image and below; past a backing file's end counts, a part crossing that end does not; a raw
// backing file never does), for new clusters and for clusters reused in place alike. Each
// write runs through qemu-io and the engine on copies of one image; the host files must have
// the same data and holes (SEEK_DATA/SEEK_HOLE, page cache dropped) and qemu-img the same map.
func TestZeroCOWLikeQemu(t *testing.T) {
	const k = 1 << 10
	type cowCase struct {
		name, opts, backing string // backing: "", "qcow2" or "raw"
		bsize               string
		bio, io             []string // qemu-io commands for the backing file and the image
		off, n              uint64
	}
	zeroAlloc := []string{"write -z 0 64k", "write -P 1 64k 64k", "write -z 64k 64k"}
	cases := []cowCase{
		{name: "zero-plain", io: zeroAlloc, off: 100, n: 100},
		{name: "zero-alloc-in-place", io: zeroAlloc, off: 64*k + 100, n: 100},
		{name: "unallocated", io: zeroAlloc, off: 200 * k, n: 100},
		{name: "extl2-unallocated-subcluster-in-place", opts: "extended_l2=on", io: []string{"write -P 1 0 2k"}, off: 10000, n: 100},
		{name: "extl2-zero-subcluster-in-place", opts: "extended_l2=on", io: []string{"write -P 1 0 2k", "write -z 4k 8k"}, off: 5000, n: 100},
		{name: "extl2-zero-and-unallocated", opts: "extended_l2=on", io: []string{"write -P 1 0 2k", "write -z 4k 8k"}, off: 13000, n: 100},
		{name: "extl2-64k-subcluster-in-place", opts: "extended_l2=on,cluster_size=2M", io: []string{"write -P 1 0 64k"}, off: 200 * k, n: 100},
		{name: "extl2-64k-zero-subcluster-in-place", opts: "extended_l2=on,cluster_size=2M", io: []string{"write -P 1 0 64k", "write -z 128k 128k"}, off: 200 * k, n: 100},
		{name: "extl2-two-runs", opts: "extended_l2=on", io: []string{"write -P 1 0 2k", "write -z 4k 4k"}, off: 9000, n: 100},
		{name: "backing-zero-cluster", backing: "qcow2", bsize: "4M", bio: []string{"write -P 9 0 1M", "write -z 0 64k"}, off: 100, n: 100},
		{name: "backing-unallocated", backing: "qcow2", bsize: "4M", bio: []string{"write -P 9 0 1M"}, off: 2000 * k, n: 100},
		{name: "backing-data", backing: "qcow2", bsize: "4M", bio: []string{"write -P 9 0 1M"}, off: 100, n: 100},
		{name: "past-backing-end", backing: "qcow2", bsize: "2080k", bio: []string{"write -P 9 0 1M"}, off: 2551104, n: 100},
		{name: "crossing-backing-end", backing: "qcow2", bsize: "2080k", bio: []string{"write -P 9 0 1M"}, off: 2157000, n: 100},
		{name: "inside-then-past-backing-end", backing: "qcow2", bsize: "2080k", bio: []string{"write -P 9 0 1M"}, off: 2048*k + 30*k, n: 4 * k},
		{name: "raw-backing-hole", backing: "raw", bsize: "4M", bio: []string{"write -P 9 2M 4k"}, off: 100, n: 100},
		{name: "raw-backing-past-end", backing: "raw", bsize: "2M", bio: []string{"write -P 9 0 4k"}, off: 3 << 20, n: 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			opts := c.opts
			if c.backing != "" {
				b := filepath.Join(dir, "base."+c.backing)
				engQemu(t, "qemu-img", "create", "-q", "-f", c.backing, b, c.bsize)
				args := []string{"-f", c.backing}
				for _, cmd := range c.bio {
					args = append(args, "-c", cmd)
				}
				engQemu(t, "qemu-io", append(args, b)...)
				if opts != "" {
					opts += ","
				}
				opts += "backing_file=" + b + ",backing_fmt=" + c.backing
			}
			orig := engCreate(t, dir, "img.qcow2", opts, "4M")
			if len(c.io) > 0 {
				args := []string{"-f", "qcow2"}
				for _, cmd := range c.io {
					args = append(args, "-c", cmd)
				}
				engQemu(t, "qemu-io", append(args, orig)...)
			}
			cmd := fmt.Sprintf("write -P 7 %d %d", c.off, c.n)
			theirs := copyImage(t, orig, t.TempDir(), false)
			ours := copyImage(t, orig, t.TempDir(), false)
			engQemu(t, "qemu-io", "-f", "qcow2", "-c", cmd, theirs)
			img := openTestImage(t, ours, OpenOptions{})
			if _, err := img.WriteAt(fill(0x07, int(c.n)), int64(c.off)); err != nil {
				t.Fatal(err)
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if a, b := hostLayout(t, ours), hostLayout(t, theirs); a != b {
				t.Errorf("%s: host file data/holes\n ours: %s\n qemu: %s", cmd, a, b)
			}
			sameImageAsQemu(t, cmd, ours, theirs)
		})
	}
}

// sameImageAsQemu requires the image we wrote (ours) and the one qemu-io wrote (theirs) after
// the same operations (what) to have the same qemu-img map, a clean and equal qemu-img check
// and the same contents.
func sameImageAsQemu(t *testing.T, what, ours, theirs string) {
	t.Helper()
	a := engQemu(t, "qemu-img", "map", "--output=json", ours)
	b := engQemu(t, "qemu-img", "map", "--output=json", theirs)
	if a != b {
		t.Errorf("%s: map\n ours:\n%s\n qemu:\n%s", what, a, b)
	}
	if a, b := checkSummary(t, ours), checkSummary(t, theirs); a != b || !strings.HasPrefix(a, "exit 0") {
		t.Errorf("%s: qemu-img check\n ours: %s\n qemu: %s", what, a, b)
	}
	if out, err := exec.Command("qemu-img", "compare", "-q", ours, theirs).CombinedOutput(); err != nil {
		t.Errorf("%s: contents differ: %v %s", what, err, out)
	}
}

// hostLayout lists the data extents of a closed file (SEEK_DATA/SEEK_HOLE) after dropping its
// clean pages from the page cache: a file system may report cached pages of an unwritten
// (ZERO_RANGE) extent as data.
func hostLayout(t *testing.T, p string) string {
	t.Helper()
	dropCache(t, p)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var s strings.Builder
	for off := int64(0); off < fi.Size(); {
		data, hole, err := NewFileStorage(f).FindAllocation(off)
		if errors.Is(err, errNoMoreData) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if data > off {
			off = data
			continue
		}
		fmt.Fprintf(&s, "[%d,%d) ", data, hole)
		off = hole
	}
	return s.String()
}
