// Random writes, write-zeroes and discards against qemu-io: after every operation the image
// the engine changed and the one QEMU changed must map the same (offsets included).
package qcow2

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

var qemuRandOps = flag.Int("qcow2.qemurand.ops", 24, "operations per shape in TestRandomOpsMatchQemu")

// randomZops draws n operations over an image of size bytes: writes, zeroes with and without
// unmap, discards; mostly multiples of gran, a third of them unaligned.
func randomZops(r *rand.Rand, size, gran uint64, n int) []zop {
	kinds := []string{"write", "write", "zero", "zero", "discard"}
	var ops []zop
	for len(ops) < n {
		off := uint64(r.IntN(int(size/gran))) * gran
		if r.IntN(3) == 0 {
			off += uint64(r.IntN(int(gran)))
		}
		ln := uint64(1+r.IntN(8)) * gran
		if r.IntN(3) == 0 {
			ln = uint64(1 + r.IntN(int(3*gran)))
		}
		ln = min(ln, size-off)
		if ln == 0 {
			continue
		}
		ops = append(ops, zop{kind: kinds[r.IntN(len(kinds))], off: off, n: ln,
			unmap: r.IntN(2) == 0, fill: byte(1 + r.IntN(250))})
	}
	return ops
}

// dropCache makes a closed or flushed file's pages leave the page cache, so that SEEK_DATA
// (and so qemu-img map's zero flags) reports unwritten extents as holes whatever was read.
func dropCache(t *testing.T, p string) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// TestRandomOpsMatchQemu runs a seeded random sequence of operations through qemu-io on one
// copy of each shape and through the engine on another (version 2 and 3, 512-byte and 64 KiB
// clusters, extended L2, a backing file shorter than the image, an internal snapshot): the
// same qemu-img map (host offsets included) after every operation, then the same check
// verdict and contents. More operations with -qcow2.qemurand.ops.
func TestRandomOpsMatchQemu(t *testing.T) {
	const size = 2565 << 10 // not cluster aligned
	shapes := []struct {
		name, opts, backing string // backing: its size, "" for none
		snapshot            bool
		fillAll             bool // write the whole image first, so that every L2 table exists
	}{
		{name: "v2", opts: "compat=0.10"},
		{name: "v2-backing", opts: "compat=0.10", backing: "2M"},
		// QEMU allocates an empty L2 table for a discard where there is none, the engine does
		// not (discard.go): with 512-byte clusters (an L2 table per 32 KiB) later host offsets
		// would differ, so every table exists from the start here.
		{name: "v3-512", opts: "cluster_size=512", fillAll: true},
		{name: "v3-backing-snapshot", opts: "cluster_size=64k", backing: "3M", snapshot: true},
		{name: "extl2", opts: "extended_l2=on,cluster_size=16k"},
		{name: "extl2-backing-snapshot", opts: "extended_l2=on,cluster_size=64k", backing: "2M", snapshot: true},
	}
	prefill := []string{"write -P 1 0 700k", "write -z 900k 300k", "write -P 3 2400k 100k"}
	for i, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			opts := sh.opts
			if sh.backing != "" {
				b := engCreate(t, dir, "base.qcow2", "", sh.backing)
				engQemu(t, "qemu-io", "-c", "write -P 9 0 "+sh.backing, b)
				opts += ",backing_file=" + b + ",backing_fmt=qcow2"
			}
			orig := engCreate(t, dir, "img.qcow2", opts, fmt.Sprint(size))
			args := []string{"-f", "qcow2"}
			if sh.fillAll {
				args = append(args, "-c", fmt.Sprintf("write -P 4 0 %d", size))
			}
			for _, c := range prefill {
				args = append(args, "-c", c)
			}
			engQemu(t, "qemu-io", append(args, orig)...)
			if sh.snapshot {
				engQemu(t, "qemu-img", "snapshot", "-c", "s", orig)
			}
			theirs := copyImage(t, orig, t.TempDir(), false)
			ours := copyImage(t, orig, t.TempDir(), false)
			img := openTestImage(t, ours, OpenOptions{})
			defer img.Close()
			gran := uint64(4 << 10)
			if strings.Contains(sh.opts, "cluster_size=512") {
				gran = 512
			}
			r := rand.New(rand.NewPCG(uint64(i)+1, 77))
			var done []string
			for _, op := range randomZops(r, size, gran, *qemuRandOps) {
				done = append(done, op.qemuIO())
				engQemu(t, "qemu-io", "-f", "qcow2", "-c", op.qemuIO(), theirs)
				if err := op.run(img); err != nil {
					t.Fatalf("%s: %v", op.qemuIO(), err)
				}
				if err := img.Flush(); err != nil {
					t.Fatal(err)
				}
				dropCache(t, ours)
				dropCache(t, theirs)
				a := engQemu(t, "qemu-img", "map", "--output=json", "-U", ours)
				b := engQemu(t, "qemu-img", "map", "--output=json", "-U", theirs)
				if a != b {
					t.Fatalf("after %s\n ours:\n%s\n qemu:\n%s", strings.Join(done, "; "), a, b)
				}
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			if a, b := checkSummary(t, ours), checkSummary(t, theirs); a != b || !strings.HasPrefix(a, "exit 0") {
				t.Errorf("qemu-img check:\n ours: %s\n qemu: %s", a, b)
			}
			if out, err := exec.Command("qemu-img", "compare", "-q", ours, theirs).CombinedOutput(); err != nil {
				t.Errorf("contents differ: %v %s", err, out)
			}
		})
	}
}
