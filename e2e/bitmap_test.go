// Persistent dirty bitmaps served with -B (qemu:dirty-bitmap:NAME), against qemu-nbd -B: the
// same requests through each server leave the same bitmaps, served the same way, live and
// after a clean stop; missing and in-use bitmaps are refused with qemu-nbd's messages.
package e2e

import (
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/e2e/libnbd"
)

const ctxB0, ctxB2 = "qemu:dirty-bitmap:b0", "qemu:dirty-bitmap:b2"

// bitmapImages makes two copies of a 16 MiB image with bitmaps b0 (64 KiB, enabled), b1
// (128 KiB, disabled) and b2 (512 bytes, enabled), and one qemu-io write that dirties b0, b2.
func bitmapImages(t *testing.T, dir string) (string, string) {
	t.Helper()
	p := filepath.Join(dir, "base.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", p, "16M")
	run(t, "qemu-img", "bitmap", "--add", p, "b0")
	run(t, "qemu-img", "bitmap", "--add", "-g", "128k", "--disable", p, "b1")
	run(t, "qemu-img", "bitmap", "--add", "-g", "512", p, "b2")
	run(t, "qemu-io", "-f", "qcow2", "-c", "write -P 9 5M 64k", p)
	a, b := filepath.Join(dir, "qnbd.qcow2"), filepath.Join(dir, "qemu.qcow2")
	run(t, "cp", p, a)
	run(t, "cp", p, b)
	return a, b
}

// guestRequests sends writes, zeroes (with and without NO_HOLE, unaligned) and trims over two
// connections.
func guestRequests(t *testing.T, s *server) {
	t.Helper()
	const mib = 1 << 20
	h1 := connect(t, s, "", nil)
	h2 := connect(t, s, "", nil)
	must(t, h1.Pwrite(stamp(1, 0, 4096), 0, 0))
	must(t, h2.Pwrite(stamp(2, 3*mib+100, 3000), 3*mib+100, 0))
	must(t, h1.Zero(100*1024, 7*mib+512, 0))
	must(t, h2.Zero(64*1024, 9*mib, libnbd.CmdFlagNoHole))
	must(t, h1.Trim(128*1024, 11*mib, 0))
	must(t, h2.Trim(1000, 12*mib+10, 0))
	must(t, h1.Pwrite(stamp(3, 16*mib-512, 512), 16*mib-512, 0))
	must(t, h1.Flush(0))
	h1.Close()
	h2.Close()
}

// qemuMap is nbdinfo --map of a bitmap context as qemu-nbd -r -B serves it from path.
func qemuMap(t *testing.T, path, name string) string {
	t.Helper()
	return run(t, "nbdinfo", "--map=qemu:dirty-bitmap:"+name, "--", "[", "qemu-nbd", "-r", "-B", name, "-f", "qcow2", path, "]")
}

// TestBitmapServedLikeQemuNbd: with and without --discard=unmap, the same requests through
// qnbd -B and qemu-nbd -B give the same qemu:dirty-bitmap extents (asked together with
// base:allocation in one block status request), and after a clean stop both images hold the
// same bitmaps, flags and dirty maps (served by qemu-nbd -r -B), and check clean.
func TestBitmapServedLikeQemuNbd(t *testing.T) {
	t.Parallel()
	for _, discard := range []string{"unmap", "ignore"} {
		t.Run(discard, func(t *testing.T) {
			ours, theirs := bitmapImages(t, t.TempDir())
			args := func(p string) []string {
				return []string{"-e", "3", "-B", "b0", "-B", "b2", "--discard=" + discard, "-f", "qcow2", p}
			}
			q := startQnbd(t, serverConfig{Args: args(ours)})
			r := startQemuNBD(t, serverConfig{Args: args(theirs)})
			guestRequests(t, q)
			guestRequests(t, r)
			for _, ctx := range []string{ctxB0, ctxB2, libnbd.ContextBaseAllocation} {
				hq := connect(t, q, "", withContexts(libnbd.ContextBaseAllocation, ctxB0, ctxB2))
				hr := connect(t, r, "", withContexts(libnbd.ContextBaseAllocation, ctxB0, ctxB2))
				got, want := blockStatus(t, hq, ctx), blockStatus(t, hr, ctx)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s while served: qnbd %v, qemu-nbd %v", ctx, got, want)
				}
				if ctx == ctxB0 && len(got) < 5 {
					t.Errorf("%s: too few dirty runs to mean anything: %v", ctx, got)
				}
				hq.Close()
				hr.Close()
			}
			q.Stop()
			r.Stop()
			requireClean(t, ours)
			for _, name := range []string{"b0", "b1", "b2"} {
				if a, b := qemuMap(t, ours, name), qemuMap(t, theirs, name); a != b {
					t.Errorf("stored %s:\nqnbd's image\n%sqemu-nbd's image\n%s", name, a, b)
				}
			}
			if a, b := bitmapInfo(t, ours), bitmapInfo(t, theirs); a != b {
				t.Errorf("qemu-img info bitmaps:\nqnbd's image\n%s\nqemu-nbd's image\n%s", a, b)
			}
		})
	}
}

// bitmapInfo is the bitmaps part of qemu-img info.
func bitmapInfo(t *testing.T, path string) string {
	t.Helper()
	out := run(t, "qemu-img", "info", path)
	_, after, _ := strings.Cut(out, "bitmaps:")
	before, _, _ := strings.Cut(after, "refcount bits")
	return before
}

// TestBitmapContextsListedLikeQemuNbd: LIST_META_CONTEXT with no query, "qemu:" and
// "qemu:dirty-bitmap:" lists the same contexts in the same order (qemu-nbd reverses the -B
// order) as qemu-nbd, read-only and with -A.
func TestBitmapContextsListedLikeQemuNbd(t *testing.T) {
	t.Parallel()
	ours, theirs := bitmapImages(t, t.TempDir())
	args := func(p string) []string {
		return []string{"-r", "-A", "-B", "b0", "-B", "b1", "-B", "b2", "-f", "qcow2", p}
	}
	q := startQnbd(t, serverConfig{Args: args(ours)})
	r := startQemuNBD(t, serverConfig{Args: args(theirs)})
	for _, queries := range [][]string{nil, {"qemu:"}, {"qemu:dirty-bitmap:"}, {"qemu:dirty-bitmap:b1", "base:"}, {"qemu:dirty-bitmap:nope"}} {
		list := func(s *server) []string {
			h := connect(t, s, "", func(h *libnbd.Handle) error {
				if err := h.SetOptMode(true); err != nil {
					return err
				}
				for _, q := range queries {
					if err := h.AddMetaContext(q); err != nil {
						return err
					}
				}
				return nil
			})
			defer h.Close()
			got, err := h.OptListMetaContext()
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		if a, b := list(q), list(r); !reflect.DeepEqual(a, b) {
			t.Errorf("queries %q: qnbd %q, qemu-nbd %q", queries, a, b)
		}
	}
}

// TestBitmapRefusedLikeQemuNbd: a bitmap the image lacks, and one a killed QEMU writer left
// in-use, are refused with qemu-nbd's message and exit status.
func TestBitmapRefusedLikeQemuNbd(t *testing.T) {
	t.Parallel()
	ours, _ := bitmapImages(t, t.TempDir())
	killed := exec.Command("qemu-io", "-f", "qcow2", "-c", "write 0 4k", "-c", "sigraise 9", ours)
	killed.Run() // killed by its own SIGKILL: b0 and b2 stay in-use
	// Each listens on its own Unix socket (both bind before they open the image): the default
	// TCP port 10809 could be taken by a concurrent test, and would be the wrong error.
	sock := func() string { return filepath.Join(shortTempDir(t), "s") }
	for _, bm := range []string{"nope", "b0"} {
		got := runCode(t, qnbdBin, "-k", sock(), "-r", "-B", bm, "-f", "qcow2", ours)
		want := runCode(t, "qemu-nbd", "-k", sock(), "-r", "-B", bm, "-f", "qcow2", ours)
		if got.Code != want.Code || strings.TrimPrefix(got.Stderr, "qnbd: ") != strings.TrimPrefix(want.Stderr, "qemu-nbd: ") {
			t.Errorf("-B %s: qnbd exit %d %q, qemu-nbd exit %d %q", bm, got.Code, got.Stderr, want.Code, want.Stderr)
		}
	}
}
