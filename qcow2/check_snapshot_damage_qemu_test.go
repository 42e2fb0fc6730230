// Check against qemu-img check on images whose internal snapshot table is damaged: every poke
// of open_qemu_test.go and every damage of snapshot_damage_qemu_test.go, checked, repaired
// with -r leaks and with -r all.
package qcow2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/qcow2/internal/memstore"
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
func ccCompareAllMessages(t *testing.T, res *CheckResult, q *corpus.CheckResult) {
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
func ccCompareCheck(t *testing.T, res *CheckResult, err error, q *corpus.CheckResult) {
	t.Helper()
	if q.ExitCode == 1 {
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
	if strings.Contains(q.Stderr, "Rebuilding refcount structure") && res.ImageEndOffset > uint64(q.ImageEndOffset) {
		// A deliberate difference (rebuild.go): the rebuilt refcount structures go past the
		// end of the file, where QEMU reuses free clusters, so the image may end later.
		t.Logf("after a rebuild: image end %d, qemu-img's %d", res.ImageEndOffset, q.ImageEndOffset)
		q.ImageEndOffset = int64(res.ImageEndOffset)
	}
	ccCompareWithQemu(t, res, q)
	ccCompareAllMessages(t, res, q)
}

// TestCheckSnapshotDamageMatchesQemu: on every damaged snapshot table, Check, RepairLeaks and
// RepairAll against qemu-img check, -r leaks and -r all on copies. A check and a leak repair
// must agree with qemu-img in exit status, counters and messages, and leave images on which
// qemu-img check and snapshot -l then agree; so must a RepairAll (which rewrites the table
// where entries are incomplete), except where qemu-img drops snapshots or extra data: that is
// refused (ENOTSUP, a check error) and must leave the file as it was.
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
			q := corpus.QemuCheck(t, img, corpus.CheckOptions{})
			res, err := Check(img, RepairNone)
			ccCompareCheck(t, res, err, q)
			mu.Lock()
			wantExit[im.name] = q.ExitCode
			mu.Unlock()

			for _, mode := range []RepairMode{RepairLeaks, RepairAll} {
				theirs := ccCopy(t, img, dir, "theirs-"+mode.String()+".qcow2")
				ours := ccCopy(t, img, dir, "ours-"+mode.String()+".qcow2")
				q := corpus.QemuCheck(t, theirs, corpus.CheckOptions{Repair: mode.String()})
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
					if !strings.Contains(q.Stderr, "Discarding") {
						t.Errorf("-r all refused where qemu-img drops nothing: %s", q.Stderr)
					}
					continue
				}
				ccCompareCheck(t, res, err, q)
				if a, b := corpus.QemuCheck(t, ours, corpus.CheckOptions{}), corpus.QemuCheck(t, theirs, corpus.CheckOptions{}); a.ExitCode != b.ExitCode {
					t.Errorf("-r %v: qemu-img check afterwards: ours %d, theirs %d\nours: %s\ntheirs: %s", mode, a.ExitCode, b.ExitCode, a.Stderr, b.Stderr)
				}
				// The snapshot table as QEMU reads it afterwards (rewritten by -r all).
				list := func(p string) string {
					_, out := runOK("qemu-img", "snapshot", "-l", "-U", p)
					return strings.ReplaceAll(out, p, "IMG")
				}
				if a, b := list(ours), list(theirs); a != b {
					t.Errorf("-r %v: snapshot list afterwards differs\nours:\n%s\ntheirs:\n%s", mode, a, b)
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

// TestRepairSnapshotTableCrashSafety interrupts a RepairAll that rewrites the snapshot table
// at every point of its write log (unsynced writes dropped, kept, or kept at random and torn)
// and requires of every state: a readable header, a second RepairAll that leaves leaks at
// worst (and a third a clean image), and (at sync points and the end) qemu-img check clean, the guest data and the
// snapshot list of an uninterrupted repair.
func TestRepairSnapshotTableCrashSafety(t *testing.T) {
	t.Parallel()
	want := map[string]bool{"damage-truncated-at-table": true, "damage-truncated-in-header": true, "poke-count-past-table": true, "poke-extra-too-large": true}
	for _, im := range damagedSnapshotImages(t) {
		if !want[im.name] {
			continue
		}
		t.Run(im.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			orig := filepath.Join(dir, "orig.qcow2")
			if err := writeSparse(orig, im.b); err != nil {
				t.Fatal(err)
			}
			ref := ccCopy(t, orig, dir, "ref.qcow2")
			if res, err := Check(ref, RepairAll); err != nil || res.ExitCode() != 0 || res.CorruptionsFixed == 0 {
				t.Fatalf("RepairAll: %v %+v", err, res)
			}
			list := func(p string) string {
				_, out := runOK("qemu-img", "snapshot", "-l", "-U", p)
				return strings.ReplaceAll(out, p, "IMG")
			}
			wantList := list(ref)
			st := storeOf(t, orig)
			st.StartLog()
			if res, err := CheckStorage(st, RepairAll); err != nil || res.ExitCode() != 0 {
				t.Fatalf("RepairAll: %v %+v", err, res)
			}
			log := st.Log()
			rng := rand.New(rand.NewPCG(2, uint64(len(log))))
			configs := []memstore.CrashConfig{
				{Policy: memstore.DropUnsynced},
				{Policy: memstore.KeepUnsynced},
				{Policy: memstore.KeepRandom, Torn: true},
			}
			for n := 0; n <= len(log); n++ {
				for ci, cfg := range configs {
					cs, err := st.CrashAt(n, rng, cfg)
					if err != nil {
						t.Fatal(err)
					}
					what := fmt.Sprintf("crash after %d/%d ops (%v), config %d", n, len(log), opName(log, n), ci)
					if _, err := checkReadHeader(cs, uint64(len(im.b))); err != nil {
						t.Fatalf("%s: header unreadable: %v", what, err)
					}
					// A crash between the new table's refcounts and the header switch leaks
					// its clusters; when they lie past the end of the file, only a check
					// after the file has grown sees the leak (as in QEMU): a third pass
					// fixes it.
					res, err := CheckStorage(cs, RepairAll)
					if err != nil || res.CheckErrors+res.Corruptions != 0 {
						t.Fatalf("%s: second RepairAll: %v %q", what, err, res.Messages)
					}
					if res.Leaks != 0 {
						if res, err = CheckStorage(cs, RepairAll); err != nil || res.ExitCode() != 0 {
							t.Fatalf("%s: third RepairAll: %v %q", what, err, res.Messages)
						}
					}
					if cfg.Policy != memstore.DropUnsynced && n != len(log) {
						continue
					}
					p := filepath.Join(dir, fmt.Sprintf("crash-%d-%d.qcow2", n, ci))
					if err := cs.WriteFile(p); err != nil {
						t.Fatal(err)
					}
					if q := corpus.QemuCheck(t, p, corpus.CheckOptions{}); q.ExitCode != 0 {
						t.Fatalf("%s: qemu-img check after the repair: %d\n%s", what, q.ExitCode, q.Stderr)
					}
					if !ccSameGuest(t, ref, p) {
						t.Fatalf("%s: guest data changed", what)
					}
					if got := list(p); got != wantList {
						t.Fatalf("%s: snapshot list\n%s\nwant\n%s", what, got, wantList)
					}
				}
			}
		})
	}
}

// TestRepairSnapshotTableIOErrors fails each write and each sync of a RepairAll that rewrites
// the snapshot table in turn (EIO): no panic, and RepairAll without faults then leaves a clean
// image (leaked clusters of the failed attempt fixed by one more pass at worst).
func TestRepairSnapshotTableIOErrors(t *testing.T) {
	t.Parallel()
	for _, im := range damagedSnapshotImages(t) {
		if im.name != "damage-truncated-at-table" && im.name != "poke-count-past-table" && im.name != "damage-extra-over-limit" {
			continue
		}
		t.Run(im.name, func(t *testing.T) {
			t.Parallel()
			probe := memstore.FromBytes(im.b)
			if res, err := CheckStorage(probe, RepairAll); err != nil || res.ExitCode() != 0 {
				t.Fatalf("RepairAll: %v %+v", err, res)
			}
			if probe.Count(memstore.OpWrite) < 3 {
				t.Fatalf("the repair made %d writes: no table rewrite?", probe.Count(memstore.OpWrite))
			}
			for _, kind := range []memstore.OpKind{memstore.OpWrite, memstore.OpSync} {
				for nth := 1; nth <= probe.Count(kind); nth++ {
					st := memstore.FromBytes(im.b)
					st.Inject(&memstore.Rule{Kind: kind, Nth: nth})
					res, err := CheckStorage(st, RepairAll)
					if err == nil && res.ExitCode() == 0 {
						t.Logf("%v #%d failed; repair still completed: %q", kind, nth, res.Messages)
					}
					st.Inject(nil)
					for pass := 0; ; pass++ {
						res, err = CheckStorage(st, RepairAll)
						if err == nil && res.ExitCode() == 0 {
							break
						}
						if pass == 1 || err != nil || res.CheckErrors+res.Corruptions != 0 {
							t.Fatalf("%v #%d failed, then RepairAll: %v %q", kind, nth, err, res.Messages)
						}
					}
				}
			}
		})
	}
}
