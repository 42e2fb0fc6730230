// Check against qemu-img check on images whose internal snapshot table is damaged: every poke
// of open_qemu_test.go and every damage of snapshot_damage_qemu_test.go, checked, repaired
// with -r leaks and with -r all.
package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// damagedSnapshotImage is one image with a damaged snapshot table, as bytes.
type damagedSnapshotImage struct {
	name string
	b    []byte
}

// damagedSnapshotImages builds, with qemu-img, an image (1 MiB, 0x01 in its first 64 KiB,
// snapshot s1) per damage kind and damages it: the pokes of TestOpenDamagedSnapshotTableLikeQemu
// and the damages of TestOpenSnapshotDamageLikeQemu (but the slow one).
func damagedSnapshotImages(t *testing.T) []damagedSnapshotImage {
	t.Helper()
	base := func(compat string) []byte {
		dir := t.TempDir()
		img := engCreate(t, dir, "b.qcow2", "compat="+compat, "1M")
		engQemu(t, "qemu-io", "-c", "write -P 1 0 64k", img)
		engQemu(t, "qemu-img", "snapshot", "-c", "s1", img)
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v2, v3 := base("0.10"), base("1.1")
	var out []damagedSnapshotImage
	for _, p := range snapshotPokes() {
		b := bytes.Clone(v3)
		if p.compat == "0.10" {
			b = bytes.Clone(v2)
		}
		st := int64(binary.BigEndian.Uint64(b[offSnapshotsOffset:]))
		v := make([]byte, 8)
		binary.BigEndian.PutUint64(v, p.val)
		copy(b[p.off(st):], v[8-p.width:])
		out = append(out, damagedSnapshotImage{"poke-" + p.name, b})
	}
	for _, d := range snapshotDamages() {
		if d.slow {
			continue
		}
		out = append(out, damagedSnapshotImage{"damage-" + d.name, d.fn(t, bytes.Clone(v3))})
	}
	return out
}

// ccCompareAllMessages requires our messages to be qemu-img check's stderr line for line,
// "qemu-img: " (error_report's prefix) aside, up to the "Check failed" line that the command
// line adds, and without the repair summary that qemu-img prints on stdout.
func ccCompareAllMessages(t *testing.T, res *CheckResult, q ccQemuCheck) {
	t.Helper()
	var want []string
	for _, line := range strings.Split(strings.TrimRight(q.Stderr, "\n"), "\n") {
		if line == "" || strings.HasPrefix(line, "qemu-img: Check failed") {
			continue
		}
		want = append(want, strings.TrimPrefix(line, "qemu-img: "))
	}
	var got []string
	for _, m := range res.Messages {
		switch {
		case m == "The following inconsistencies were found and repaired:", m == "Double checking the fixed image now...",
			strings.HasSuffix(m, " leaked clusters"), strings.HasSuffix(m, " corruptions"):
			continue
		}
		got = append(got, m)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("messages differ\nours:\n%s\nqemu-img:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// ccCompareCheck compares a Check (or repair) with qemu-img check's run of the same mode: a
// check that qemu-img could not complete (exit 1) must fail here too, with the same errno
// ("Check failed: ...") and messages; otherwise every counter and message must agree.
func ccCompareCheck(t *testing.T, res *CheckResult, err error, q ccQemuCheck) {
	t.Helper()
	if q.Exit == 1 {
		if err == nil || res == nil || res.CheckErrors == 0 {
			t.Fatalf("qemu-img check failed (%s); ours: %v %+v", q.Stderr, err, res)
		}
		if errors.Is(err, ErrFormat) {
			t.Errorf("a failed check is an open failure: %v", err)
		}
		for _, e := range []struct {
			text  string
			errno syscall.Errno
		}{{"File too large", syscall.EFBIG}, {"Invalid argument", syscall.EINVAL}, {"Input/output error", syscall.EIO}} {
			if strings.Contains(q.Stderr, "Check failed: "+e.text) && !errors.Is(err, e.errno) {
				t.Errorf("qemu-img: Check failed: %s; ours: %v", e.text, err)
			}
		}
		ccCompareAllMessages(t, res, q)
		return
	}
	if err != nil {
		t.Fatalf("Check: %v (%q)\nqemu-img: %s", err, res.Messages, q.Stderr)
	}
	ccCompareWithQemu(t, res, q)
	ccCompareAllMessages(t, res, q)
}

// TestCheckSnapshotDamageMatchesQemu: on every damaged snapshot table, Check, RepairLeaks and
// RepairAll against qemu-img check, -r leaks and -r all on copies. A check and a leak repair
// must agree with qemu-img in exit status, counters and messages, and leave images on which
// qemu-img check then agrees. A RepairAll where qemu-img rewrites the snapshot table is
// refused (ENOTSUP, a check error) and must leave the file as it was; any other RepairAll must
// agree with qemu-img's.
func TestCheckSnapshotDamageMatchesQemu(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	wantExit := map[string]int{}
	for _, im := range damagedSnapshotImages(t) {
		t.Run(im.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := filepath.Join(dir, "t.qcow2")
			if err := writeSparse(img, im.b); err != nil {
				t.Fatal(err)
			}
			q := ccQemuImgCheck(t, img)
			res, err := Check(img, RepairNone)
			ccCompareCheck(t, res, err, q)
			mu.Lock()
			wantExit[im.name] = q.Exit
			mu.Unlock()

			for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
				theirs := ccCopy(t, img, dir, "theirs-"+mode.String()+".qcow2")
				ours := ccCopy(t, img, dir, "ours-"+mode.String()+".qcow2")
				q := ccQemuImgCheck(t, theirs, "-r", mode.String())
				res, err := Check(ours, mode)
				if mode == RepairAll && errors.Is(err, syscall.ENOTSUP) {
					if res == nil || res.CheckErrors == 0 {
						t.Errorf("-r all refused without a check error: %+v", res)
					}
					b, rerr := os.ReadFile(ours)
					if rerr != nil {
						t.Fatal(rerr)
					}
					if !bytes.Equal(b, im.b) {
						t.Errorf("-r all refused, but the image changed")
					}
					if q.Exit == 1 && !strings.Contains(q.Stderr, "Check failed") {
						t.Errorf("qemu-img -r all failed in an unexpected way: %s", q.Stderr)
					}
					continue
				}
				ccCompareCheck(t, res, err, q)
				if a, b := ccQemuImgCheck(t, ours), ccQemuImgCheck(t, theirs); a.Exit != b.Exit {
					t.Errorf("-r %v: qemu-img check afterwards: ours %d, theirs %d\nours: %s\ntheirs: %s", mode, a.Exit, b.Exit, a.Stderr, b.Stderr)
				}
			}
		})
	}
	t.Cleanup(func() {
		// The damages must span every verdict, or the comparison proves little.
		mu.Lock()
		defer mu.Unlock()
		seen := map[int]bool{}
		for _, e := range wantExit {
			seen[e] = true
		}
		if len(wantExit) > 0 && (!seen[0] || !seen[1] || !seen[2]) {
			t.Errorf("qemu-img check verdicts %v: want clean, failed and corrupt images among them", wantExit)
		}
	})
}
