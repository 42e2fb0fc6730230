// Resize against qemu-img resize on copies of the same images: the same map, refcounts, file
// length, header L1 size and contents (grow, grow over longer backing files, shrink across
// L2 tables and refcount blocks, images with internal snapshots, raw data files).
package qcow2

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type resizeCase struct {
	name    string
	opts    string
	size    string
	io      []string
	backing string // size of a qcow2 backing file filled with data ("" for none)
	snap    bool   // take an internal snapshot after io
	to      uint64
	// refused: QEMU refuses (and so must we), leaving the image as it was.
	refused bool
	// staleTail: the old last cluster holds bytes past the old end, which QEMU shows again
	// and qnbd zeroes: contents are compared against zeros there.
	staleTail bool
}

func resizeCases() []resizeCase {
	const m = 1 << 20
	data := []string{"write -P 1 0 1M", "write -P 2 2M 64k", "write -z 3M 64k", "write -P 3 3900k 100k"}
	return []resizeCase{
		{name: "grow", size: "4M", io: data, to: 8 * m},
		{name: "grow-l1", opts: "cluster_size=4096", size: "4M", io: data, to: 64 * m},
		{name: "grow-snapshot", opts: "cluster_size=4096", size: "4M", io: data, snap: true, to: 64 * m},
		{name: "grow-over-backing", size: "1M", io: []string{"write -P 1 0 100k"}, backing: "8M", to: 3*m + 512*1024 + 3*512},
		{name: "grow-over-backing-unaligned", size: "1047552", io: []string{"write -P 1 0 100k"}, backing: "8M", to: 5 * m},
		{name: "grow-over-backing-extl2", opts: "extended_l2=on", size: "1047552", io: []string{"write -P 1 0 10k"}, backing: "8M", to: 5 * m},
		{name: "grow-over-backing-v2", opts: "compat=0.10", size: "1M", io: []string{"write -P 1 0 100k"}, backing: "8M", to: 3 * m, refused: true},
		{name: "grow-over-shorter-backing", size: "4M", io: []string{"write -P 1 0 100k"}, backing: "2M", to: 6 * m},
		{name: "grow-raw-datafile", opts: "data_file=DATA,data_file_raw=on", size: "1M", io: []string{"write -P 1 0 100k"}, to: 3*m + 4096},
		{name: "shrink", size: "4M", io: data, to: 1 * m},
		{name: "shrink-unaligned", size: "4M", io: data, to: 2*m + 3*512},
		{name: "shrink-snapshot", size: "4M", io: data, snap: true, to: 1 * m},
		{name: "grow-snapshot-v2", opts: "compat=0.10", size: "4M", io: data, snap: true, to: 8 * m, refused: true},
		{name: "shrink-snapshot-v2", opts: "compat=0.10", size: "4M", io: data, snap: true, to: 1 * m, refused: true},
		{name: "same-size-snapshot-v2", opts: "compat=0.10", size: "4M", io: data, snap: true, to: 4 * m, refused: true},
		{name: "shrink-l2-refblocks", opts: "cluster_size=512", size: "4M", io: []string{"write -P 1 0 4M", "write -P 2 100k 8k"}, to: 100 * 1024},
		{name: "shrink-extl2", opts: "extended_l2=on,cluster_size=32k", size: "4M", io: data, to: 1040 * 1024},
		{name: "shrink-backing", size: "4M", io: []string{"write -P 1 1M 100k", "write -z 3M 64k"}, backing: "8M", to: 2 * m},
		{name: "shrink-then-grow", size: "4M", io: append(data, "resize 1047552"), to: 4 * m, staleTail: true},
	}
}

func buildResizeCase(t *testing.T, dir string, c resizeCase) string {
	t.Helper()
	opts := strings.ReplaceAll(c.opts, "DATA", filepath.Join(dir, "img.data"))
	if c.backing != "" {
		b := engCreate(t, dir, "base.qcow2", "", c.backing)
		engQemu(t, "qemu-io", "-c", "write -P 9 0 "+c.backing, b)
		if opts != "" {
			opts += ","
		}
		opts += "backing_file=" + b + ",backing_fmt=qcow2"
	}
	p := engCreate(t, dir, "img.qcow2", opts, c.size)
	for _, cmd := range c.io {
		if sz, ok := strings.CutPrefix(cmd, "resize "); ok {
			engQemu(t, "qemu-img", "resize", "-q", "--shrink", p, sz)
			continue
		}
		engQemu(t, "qemu-io", "-f", "qcow2", "-c", cmd, p)
	}
	if c.snap {
		engQemu(t, "qemu-img", "snapshot", "-c", "s1", p)
		engQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 4 64k 64k", p)
	}
	return p
}

// resizeState is what must be equal after both resizes.
func resizeState(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var s strings.Builder
	// The file's length in whole clusters: the engine extends the file to cover every
	// allocated cluster, QEMU only as far as it wrote (the last cluster in part).
	cs := uint64(1) << binary.BigEndian.Uint32(b[offClusterBits:])
	fmt.Fprintf(&s, "file length %d clusters\n", alignUp(uint64(len(b)), cs)/cs)
	fmt.Fprintf(&s, "size %d l1_size %d\n", binary.BigEndian.Uint64(b[offSize:]), binary.BigEndian.Uint32(b[offL1Size:]))
	s.WriteString(checkSummary(t, p) + "\n")
	s.WriteString(engQemu(t, "qemu-img", "map", "--output=json", p))
	info := engQemu(t, "qemu-img", "info", p)
	snaps := false
	for _, l := range strings.Split(info, "\n") {
		snaps = snaps || strings.HasPrefix(l, "Snapshot list")
		if strings.HasPrefix(l, "virtual size") || (snaps && !strings.HasPrefix(l, "Format specific")) {
			s.WriteString(l + "\n")
		}
		if strings.HasPrefix(l, "Format specific") {
			snaps = false
		}
	}
	return s.String()
}

// TestResizeMatchesQemu runs qemu-img resize (with --shrink) on one copy and Image.Resize on
// another, and requires the same outcome.
func TestResizeMatchesQemu(t *testing.T) {
	for _, c := range resizeCases() {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			orig := buildResizeCase(t, dir, c)
			data := strings.Contains(c.opts, "data_file")
			theirs := copyImage(t, orig, t.TempDir(), data)
			ours := copyImage(t, orig, t.TempDir(), data)
			before := resizeState(t, ours)
			qok, qout := runOK("qemu-img", "resize", "--shrink", theirs, fmt.Sprint(c.to))
			img, err := Open(ours, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rerr := img.Resize(c.to)
			if cerr := img.Close(); cerr != nil {
				t.Fatal(cerr)
			}
			if qok == c.refused || (rerr == nil) != qok {
				t.Fatalf("resize: ours %v; qemu-img (refusal expected %v): %s", rerr, c.refused, qout)
			}
			a, b := resizeState(t, ours), resizeState(t, theirs)
			if c.refused {
				// QEMU grows the L1 table before it fails; the rest must be as it was.
				if after := resizeState(t, ours); after != before {
					t.Errorf("refused resize changed the image:\n before:\n%s\n after:\n%s", before, after)
				}
				return
			}
			if a != b {
				t.Errorf("after resize:\n ours:\n%s\n qemu:\n%s", a, b)
			}
			got, want := engConvertRaw(t, ours), engConvertRaw(t, theirs)
			if c.staleTail {
				// QEMU shows what the shrink left past the old end again; qnbd reads zeros.
				old := uint64(1047552)
				if !isZeroBytes(got[old:alignUp(old, 65536)]) {
					t.Error("the stale tail of the old last cluster is not zeroed")
				}
				copy(want[old:], got[old:alignUp(old, 65536)])
			}
			if d := engFirstDiff(got, want); d != "" {
				t.Errorf("contents: %s", d)
			}
			if c.snap {
				// The snapshot keeps the disk size it was taken at: reverting to it gives the
				// old virtual size and the old contents back, in both copies alike.
				for _, p := range []string{ours, theirs} {
					engQemu(t, "qemu-img", "snapshot", "-a", "s1", p)
				}
				if a, b := resizeState(t, ours), resizeState(t, theirs); a != b || !strings.Contains(a, "virtual size: 4 MiB") {
					t.Errorf("after reverting to the snapshot:\n ours:\n%s\n qemu:\n%s", a, b)
				}
				if d := engFirstDiff(engConvertRaw(t, ours), engConvertRaw(t, orig, "-l", "snapshot.name=s1")); d != "" {
					t.Errorf("snapshot contents after the resize: %s", d)
				}
			}
		})
	}
}

func isZeroBytes(b []byte) bool {
	for _, v := range b {
		if v != 0 {
			return false
		}
	}
	return true
}
