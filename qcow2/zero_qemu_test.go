// Write-zeroes and discard against QEMU: the same operations run by qemu-io on one copy of an
// image and by the engine on another leave the same map, the same refcounts, the same bytes.
package qcow2

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// zop is one operation, written as qemu-io takes it.
type zop struct {
	kind  string // "write", "zero", "discard"
	off   uint64
	n     uint64
	unmap bool
	fill  byte
}

func (o zop) qemuIO() string {
	switch o.kind {
	case "write":
		return fmt.Sprintf("write -P %d %d %d", o.fill, o.off, o.n)
	case "zero":
		if o.unmap {
			return fmt.Sprintf("write -z -u %d %d", o.off, o.n)
		}
		return fmt.Sprintf("write -z %d %d", o.off, o.n)
	}
	return fmt.Sprintf("discard %d %d", o.off, o.n)
}

func (o zop) run(img *Image) error {
	switch o.kind {
	case "write":
		_, err := img.WriteAt(bytes.Repeat([]byte{o.fill}, int(o.n)), int64(o.off))
		return err
	case "zero":
		return img.Zero(GuestOffset(o.off), o.n, unmapFlag(o.unmap))
	}
	return img.Discard(GuestOffset(o.off), o.n)
}

// zeroCase is an image shape; ops run on it after prefill (done by qemu-io on both copies).
type zeroCase struct {
	name     string
	opts     string
	size     uint64
	backing  string // "", "qcow2" or "raw": a backing file longer than the image's first MiB
	snapshot bool   // take an internal snapshot after the prefill (shared clusters)
	compress bool   // rewrite compressed after the prefill
}

const zk, zm = 1 << 10, 1 << 20

// zeroOps covers aligned and unaligned zeroing with and without unmap over data, zero
// clusters, unallocated ranges, compressed clusters and the image's unaligned end, and
// discards of the same.
func zeroOps(size uint64) []zop {
	return []zop{
		{kind: "zero", off: 0, n: 128 * zk},                     // aligned over data
		{kind: "zero", off: 128 * zk, n: 128 * zk, unmap: true}, // aligned over data, unmap
		{kind: "zero", off: 300 * zk, n: 10 * zk},               // unaligned over data
		{kind: "zero", off: 1100 * zk, n: 1000},                 // unaligned over unallocated
		{kind: "zero", off: 1100*zk + 3000, n: 512},             // unaligned in what it became
		{kind: "zero", off: 1200 * zk, n: 64 * zk, unmap: true}, // aligned, unallocated
		{kind: "zero", off: 1280 * zk, n: 64 * zk},              // aligned, unallocated, keep
		{kind: "zero", off: 2*zm + 100, n: 200},                 // inside data
		{kind: "zero", off: 2*zm + 64*zk + 512, n: 127 * zk, unmap: true},
		{kind: "zero", off: 3*zm + 5*zk, n: 2 * zk},          // small, inside compressed or data
		{kind: "zero", off: 3 * zm, n: 64 * zk, unmap: true}, // a whole compressed cluster
		{kind: "discard", off: 512 * zk, n: 192 * zk},
		{kind: "discard", off: 2*zm + 1000, n: 70000},
		{kind: "discard", off: 1800 * zk, n: 128 * zk}, // unallocated
		{kind: "discard", off: 0, n: 64 * zk},          // a zero cluster
		{kind: "write", off: 1800 * zk, n: 4 * zk, fill: 0x44},
		{kind: "zero", off: 1800*zk + 4*zk, n: 60 * zk, unmap: true}, // rest of a new cluster
		{kind: "zero", off: size - 1000, n: 1000},                    // the image's last bytes
		{kind: "discard", off: size - 5*zk, n: 5 * zk},               // its partial last cluster
	}
}

func zeroCases() []zeroCase {
	odd := uint64(4*zm + 5*zk) // not cluster aligned
	return []zeroCase{
		{name: "v3", opts: "cluster_size=64k", size: odd},
		{name: "v3-backing", opts: "cluster_size=64k", size: odd, backing: "qcow2"},
		{name: "v3-backing-raw", opts: "cluster_size=64k", size: odd, backing: "raw"},
		{name: "v2", opts: "compat=0.10", size: odd},
		{name: "v2-backing", opts: "compat=0.10", size: odd, backing: "qcow2"},
		{name: "v3-4k-snapshot", opts: "cluster_size=4k", size: odd, snapshot: true},
		{name: "extl2", opts: "extended_l2=on,cluster_size=32k", size: odd},
		{name: "extl2-backing", opts: "extended_l2=on,cluster_size=64k", size: odd, backing: "qcow2"},
		{name: "extl2-snapshot", opts: "extended_l2=on,cluster_size=32k", size: odd, snapshot: true},
		{name: "extl2-backing-snapshot", opts: "extended_l2=on,cluster_size=64k", size: odd, backing: "qcow2", snapshot: true},
		{name: "compressed", opts: "cluster_size=64k", size: odd, compress: true},
		{name: "extl2-compressed", opts: "extended_l2=on,cluster_size=64k", size: odd, compress: true},
		{name: "datafile", opts: "data_file=DATA", size: odd},
		{name: "datafile-raw", opts: "data_file=DATA,data_file_raw=on", size: odd},
	}
}

var zeroPrefill = []string{
	"write -P 1 0 1M", "write -P 2 2M 256k", "write -P 3 3M 128k", "write -z 1600k 64k",
	"write -P 5 4M 5k",
}

// buildZeroCase makes the case's image (and backing file) in dir with qemu-img and qemu-io.
func buildZeroCase(t *testing.T, dir string, c zeroCase) string {
	t.Helper()
	opts := strings.ReplaceAll(c.opts, "DATA", filepath.Join(dir, "img.data"))
	if c.backing != "" {
		b := filepath.Join(dir, "base."+c.backing)
		engQemu(t, "qemu-img", "create", "-q", "-f", c.backing, b, fmt.Sprint(c.size))
		engQemu(t, "qemu-io", "-f", c.backing, "-c", "write -P 9 0 "+fmt.Sprint(c.size), b)
		opts += ",backing_file=" + b + ",backing_fmt=" + c.backing
	}
	p := engCreate(t, dir, "img.qcow2", opts, fmt.Sprint(c.size))
	args := []string{"-f", "qcow2"}
	for _, cmd := range zeroPrefill {
		args = append(args, "-c", cmd)
	}
	engQemu(t, "qemu-io", append(args, p)...)
	if c.compress {
		q := p + ".c"
		engQemu(t, "qemu-img", "convert", "-c", "-O", "qcow2", "-o", c.opts, p, q)
		engQemu(t, "mv", q, p)
	}
	if c.snapshot {
		engQemu(t, "qemu-img", "snapshot", "-c", "s", p)
	}
	return p
}

// checkSummary is what qemu-img check says, besides its exit code, about allocation.
func checkSummary(t *testing.T, p string) string {
	t.Helper()
	q := corpus.QemuCheck(t, p, corpus.CheckOptions{Human: true})
	code, out := q.ExitCode, q.Text
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return fmt.Sprintf("exit %d: %s", code, strings.Join(lines[max(0, len(lines)-2):], " / "))
}

// copyImage copies the image (and its data file, renamed to match) into dir.
func copyImage(t *testing.T, src, dir string, dataFile bool) string {
	t.Helper()
	dst := filepath.Join(dir, "img.qcow2")
	engQemu(t, "cp", "--sparse=always", src, dst)
	if dataFile {
		engQemu(t, "cp", "--sparse=always", strings.TrimSuffix(src, ".qcow2")+".data", filepath.Join(dir, "img.data"))
		engQemu(t, "qemu-img", "amend", "-f", "qcow2", "-o", "data_file="+filepath.Join(dir, "img.data"), dst)
	}
	return dst
}

// TestZeroDiscardMatchQemu runs zeroOps through qemu-io and through the engine on copies of
// each case's image and requires the same qemu-img map (offsets included), the same qemu-img
// check verdict and allocation, and the same contents. Each operation is also compared
// alone, so that a difference names it.
func TestZeroDiscardMatchQemu(t *testing.T) {
	for _, c := range zeroCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			orig := buildZeroCase(t, dir, c)
			data := strings.Contains(c.opts, "data_file")
			ops := zeroOps(c.size)
			theirs := copyImage(t, orig, t.TempDir(), data)
			ours := copyImage(t, orig, t.TempDir(), data)
			img := openTestImage(t, ours, OpenOptions{})
			for i, op := range ops {
				engQemu(t, "qemu-io", "-f", "qcow2", "-c", op.qemuIO(), theirs)
				if err := op.run(img); err != nil {
					t.Fatalf("op %d %s: %v", i, op.qemuIO(), err)
				}
				if err := img.Flush(); err != nil {
					t.Fatal(err)
				}
				a := engQemu(t, "qemu-img", "map", "--output=json", "-U", ours)
				b := engQemu(t, "qemu-img", "map", "--output=json", "-U", theirs)
				if a != b {
					t.Fatalf("after op %d (%s):\n ours:\n%s\n qemu:\n%s", i, op.qemuIO(), a, b)
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

// TestZeroNoFallbackLikeQemu: a fast zero (NBD FAST_ZERO, QEMU's BDRV_REQ_NO_FALLBACK) fails
// exactly where QEMU's would have to write, after zeroing the pieces before, as QEMU does;
// version 2 images refuse it outright.
func TestZeroNoFallbackLikeQemu(t *testing.T) {
	for _, c := range zeroCases() {
		if c.backing == "raw" || c.snapshot {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			orig := buildZeroCase(t, dir, c)
			data := strings.Contains(c.opts, "data_file")
			ours := copyImage(t, orig, t.TempDir(), data)
			img := openTestImage(t, ours, OpenOptions{})
			var got []string
			for _, op := range zeroOps(c.size) {
				if op.kind != "zero" {
					continue
				}
				f := ZeroNoFallback
				if op.unmap {
					f |= ZeroMayUnmap
				}
				err := img.Zero(GuestOffset(op.off), op.n, f)
				got = append(got, fmt.Sprint(err == nil))
				if err != nil && !strings.Contains(err.Error(), "would write data") {
					t.Fatalf("%s: %v", op.qemuIO(), err)
				}
			}
			if err := img.Close(); err != nil {
				t.Fatal(err)
			}
			// QEMU through qemu-nbd (NBD_CMD_FLAG_FAST_ZERO maps to BDRV_REQ_NO_FALLBACK).
			theirs := copyImage(t, orig, t.TempDir(), data)
			want := qemuNBDFastZeroes(t, theirs, zeroOps(c.size))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("fast zero succeeded:\n ours: %v\n qemu: %v", got, want)
			}
			a := engQemu(t, "qemu-img", "map", "--output=json", ours)
			b := engQemu(t, "qemu-img", "map", "--output=json", theirs)
			if a != b {
				t.Errorf("map after the fast zeroes:\n ours:\n%s\n qemu:\n%s", a, b)
			}
			corpus.RequireClean(t, ours)
		})
	}
}

// qemuNBDFastZeroes serves img with qemu-nbd --discard=unmap and sends every zero op as a
// FAST_ZERO request with nbdsh (NO_HOLE when the op does not unmap); it reports which
// succeeded.
func qemuNBDFastZeroes(t *testing.T, img string, ops []zop) []string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	cmd := exec.Command("qemu-nbd", "-t", "--discard=unmap", "-k", sock, "-f", "qcow2", img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		// SIGTERM: qemu-nbd flushes its metadata caches before it exits.
		cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	}()
	for deadline := time.Now().Add(60 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-exited:
			t.Fatalf("qemu-nbd exited: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not create its socket: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	var py strings.Builder
	py.WriteString("import nbd, time\nh = nbd.NBD()\n")
	fmt.Fprintf(&py, "for i in range(1000):\n  try:\n    h.connect_unix(%q); break\n  except nbd.Error:\n    time.sleep(0.02)\n", sock)
	py.WriteString("res = []\n")
	for _, op := range ops {
		if op.kind != "zero" {
			continue
		}
		flags := "nbd.CMD_FLAG_FAST_ZERO"
		if !op.unmap {
			flags += " | nbd.CMD_FLAG_NO_HOLE"
		}
		fmt.Fprintf(&py, "try:\n  h.zero(%d, %d, %s); res.append('true')\nexcept nbd.Error:\n  res.append('false')\n", op.n, op.off, flags)
	}
	py.WriteString("h.shutdown()\nprint(' '.join(res))\n")
	// The system interpreter, which has python3-libnbd.
	out, err := exec.Command("/usr/bin/python3", "-c", py.String()).CombinedOutput()
	if err != nil {
		t.Fatalf("nbd script: %v\n%s", err, out)
	}
	return strings.Fields(string(out))
}
