// qnbd-img snapshot against qemu-img snapshot: the same command sequence on two copies of an
// image gives the same output and exit codes, and images with the same contents.
package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// snapDate matches the DATE column of a snapshot list (the two tools take their snapshots a
// few moments apart).
var snapDate = regexp.MustCompile(`\d{4}-\d\d-\d\d \d\d:\d\d:\d\d`)

func maskDates(r result) result {
	r.stdout = snapDate.ReplaceAllString(r.stdout, "DATE")
	return r
}

func TestSnapshotCommandMatchesQemu(t *testing.T) {
	dq, do := t.TempDir(), t.TempDir()
	for _, d := range []string{dq, do} {
		sh(t, d, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "d.qcow2", "8M")
		sh(t, d, "qemu-io", "-c", "write -P 0x11 0 2M", "-c", "write -c -P 0x12 4M 64k", "d.qcow2")
		sh(t, d, "qemu-img", "create", "-q", "-f", "raw", "r.raw", "1M")
	}
	long := strings.Repeat("n", 300)
	steps := []struct {
		args  []string
		write string // a qemu-io command run on both images after the step
	}{
		{args: []string{"snapshot", "-c", "s1", "d.qcow2"}, write: "write -P 0x21 1M 2M"},
		{args: []string{"snapshot", "-c", "s1", "d.qcow2"}, write: "write -z 0 64k"},
		{args: []string{"snapshot", "-l", "d.qcow2"}},
		{args: []string{"snapshot", "-q", "-c", "q", "d.qcow2"}, write: "write -P 0x31 6M 1M"},
		{args: []string{"snapshot", "-c", long, "d.qcow2"}},
		{args: []string{"snapshot", "-U", "-l", "d.qcow2"}},
		{args: []string{"snapshot", "-a", "nope", "d.qcow2"}},
		{args: []string{"snapshot", "-d", "nope", "d.qcow2"}},
		{args: []string{"snapshot", "-a", "1", "d.qcow2"}},
		{args: []string{"snapshot", "-d", "s1", "d.qcow2"}},
		{args: []string{"snapshot", "-a", "q", "d.qcow2"}, write: "write -P 0x41 0 1M"},
		{args: []string{"snapshot", "-d", long[:255], "d.qcow2"}},
		{args: []string{"snapshot", "-l", "d.qcow2"}},
		{args: []string{"snapshot", "d.qcow2"}},
		{args: []string{"snapshot", "-U", "-c", "x", "d.qcow2"}},
		{args: []string{"snapshot", "-U", "-a", "x", "d.qcow2"}},
		{args: []string{"snapshot", "-c", "x", "-d", "y", "d.qcow2"}},
		{args: []string{"snapshot", "-l", "-l", "d.qcow2"}},
		{args: []string{"snapshot", "-f", "qcow2", "-l", "d.qcow2"}},
		{args: []string{"snapshot", "-l"}},
		{args: []string{"snapshot", "-l", "d.qcow2", "extra"}},
		{args: []string{"snapshot", "-c"}},
		{args: []string{"snapshot", "-x", "d.qcow2"}},
		{args: []string{"snapshot", "-l", "missing.qcow2"}},
		{args: []string{"snapshot", "-l", "r.raw"}},
		{args: []string{"snapshot", "-c", "x", "r.raw"}},
		{args: []string{"snapshot", "-a", "x", "r.raw"}},
		{args: []string{"snapshot", "-d", "x", "r.raw"}},
	}
	for _, st := range steps {
		want := maskDates(qemu(t, dq, st.args...))
		got := maskDates(ours(t, do, st.args...))
		if got != want {
			t.Errorf("qnbd-img %s differs from qemu-img:\nqemu-img: %v\nqnbd-img: %v", strings.Join(st.args, " "), want, got)
		}
		if st.write != "" {
			sh(t, dq, "qemu-io", "-c", st.write, "d.qcow2")
			sh(t, do, "qemu-io", "-c", st.write, "d.qcow2")
		}
	}
	// Ours is consistent, and reads as QEMU's: the active state and every snapshot.
	if r := qemu(t, do, "check", "d.qcow2"); r.code != 0 {
		t.Fatalf("qemu-img check of ours: %v", r)
	}
	sh(t, "/", "qemu-img", "compare", "-q", filepath.Join(dq, "d.qcow2"), filepath.Join(do, "d.qcow2"))
	for _, sn := range []string{"snapshot.id=2", "snapshot.id=3"} {
		a := convertSnap(t, dq, sn)
		b := convertSnap(t, do, sn)
		if !bytes.Equal(a, b) {
			t.Errorf("snapshot %s differs between qemu-img's and ours", sn)
		}
	}
}

// convertSnap returns a snapshot's guest contents, read by qemu-img.
func convertSnap(t *testing.T, dir, sn string) []byte {
	t.Helper()
	out := filepath.Join(dir, "snap.raw")
	sh(t, dir, "qemu-img", "convert", "-l", sn, "-O", "raw", "d.qcow2", out)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// With persistent dirty bitmaps: apply is refused as QEMU refuses it, create and delete keep
// the bitmaps consistent (not marked in-use), as qemu-img leaves them.
func TestSnapshotWithBitmapsMatchesQemu(t *testing.T) {
	dq, do := t.TempDir(), t.TempDir()
	for _, d := range []string{dq, do} {
		sh(t, d, "qemu-img", "create", "-q", "-f", "qcow2", "d.qcow2", "4M")
		sh(t, d, "qemu-io", "-c", "write -P 1 0 64k", "d.qcow2")
		sh(t, d, "qemu-img", "snapshot", "-c", "s", "d.qcow2")
		sh(t, d, "qemu-img", "bitmap", "--add", "d.qcow2", "b0")
	}
	for _, args := range [][]string{
		{"snapshot", "-a", "s", "d.qcow2"},
		{"snapshot", "-c", "t", "d.qcow2"},
		{"snapshot", "-d", "s", "d.qcow2"},
	} {
		want, got := maskDates(qemu(t, dq, args...)), maskDates(ours(t, do, args...))
		if got != want {
			t.Errorf("qnbd-img %s differs from qemu-img:\nqemu-img: %v\nqnbd-img: %v", strings.Join(args, " "), want, got)
		}
	}
	info := func(dir string) string {
		r := qemu(t, dir, "info", "d.qcow2")
		var keep []string
		for _, l := range strings.Split(r.stdout, "\n") {
			if !strings.HasPrefix(l, "disk size") && !snapDate.MatchString(l) {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	if w, g := info(dq), info(do); w != g {
		t.Errorf("qemu-img info after the same commands:\nqemu-img's image:\n%s\nours:\n%s", w, g)
	}
	if r := qemu(t, do, "check", "d.qcow2"); r.code != 0 {
		t.Errorf("qemu-img check: %v", r)
	}
}
