// Copy-on-write of extended-L2 clusters shared with a snapshot, against qemu-io: which
// subclusters the new cluster gets, and how they map afterwards.
package qcow2

import (
	"fmt"
	"os/exec"
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
				img, err := Open(ours, OpenOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := img.WriteAt(fill(0x07, int(w.n)), int64(w.off)); err != nil {
					t.Fatalf("%s: %v", cmd, err)
				}
				if err := img.Close(); err != nil {
					t.Fatal(err)
				}
				a := engQemu(t, "qemu-img", "map", "--output=json", ours)
				b := engQemu(t, "qemu-img", "map", "--output=json", theirs)
				if a != b {
					t.Errorf("%s: map\n ours:\n%s\n qemu:\n%s", cmd, a, b)
				}
				if a, b := checkSummary(t, ours), checkSummary(t, theirs); a != b || !strings.HasPrefix(a, "exit 0") {
					t.Errorf("%s: qemu-img check\n ours: %s\n qemu: %s", cmd, a, b)
				}
				if out, err := exec.Command("qemu-img", "compare", "-q", ours, theirs).CombinedOutput(); err != nil {
					t.Errorf("%s: contents differ: %v %s", cmd, err, out)
				}
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
