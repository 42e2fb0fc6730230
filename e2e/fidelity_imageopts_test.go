// --image-opts against qemu-nbd 7.2: the same option strings served by both (size, flags,
// bytes) and refused by both (exit status and stderr, byte for byte) (docs/image-opts.md).
package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	nbd "github.com/qnbd/qnbd/server"
)

// imageOptsFiles makes, in dir, the images the option strings name: Q (16 MiB qcow2 with
// data), R (16 MiB raw with data) and O (a qcow2 overlay of Q).
func imageOptsFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	q := offsetImage(t, t.TempDir(), "qcow2")
	r := offsetImage(t, t.TempDir(), "raw")
	files := map[string]string{"Q": filepath.Join(dir, "q.qcow2"), "R": filepath.Join(dir, "r.raw"), "O": filepath.Join(dir, "o.qcow2")}
	copyFile(t, q, files["Q"])
	copyFile(t, r, files["R"])
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", files["Q"], "-F", "qcow2", files["O"])
	return files
}

// expand puts the paths of files in place of the upper-case names in an option string.
func expand(s string, files map[string]string) string {
	for k, v := range files {
		s = strings.ReplaceAll(s, "="+k, "="+v)
	}
	return s
}

// TestImageOptsServeAsQemuNBD serves each option string from both servers, each on its own
// copies of the images, and compares the export's size and flags and reads at its start, its
// middle and its end.
func TestImageOptsServeAsQemuNBD(t *testing.T) {
	for i, tc := range []struct{ flags, opts string }{
		{"", "driver=qcow2,file.filename=Q"},
		{"", "file.filename=Q"}, // probed
		{"", "driver=qcow2,file.driver=file,file.filename=Q,l2-cache-size=1M,refcount-cache-size=256k,cache-clean-interval=30,l2-cache-entry-size=4096"},
		{"", "driver=qcow2,file.filename=Q,cache-size=1M,cache-clean-interval=0"},
		{"", "driver=qcow2,file.filename=Q,cache.direct=on,file.aio=native"},
		{"--cache=none", "driver=qcow2,file.filename=Q,file.aio=native"},
		{"", "driver=qcow2,file.filename=Q,cache.no-flush=on,read-only=off"},
		{"-r", "driver=qcow2,file.filename=Q,read-only=on"},
		{"", "driver=qcow2,file.filename=O"},
		{"", "driver=qcow2,file.filename=O,backing="},   // no backing file: Q's data is gone
		{"", "driver=qcow2,file.filename=Q,driver=raw"}, // the last value wins
		{"", "driver=raw,file.filename=R"},
		{"", "driver=raw,file.filename=R,offset=1048576"},
		{"", "driver=raw,file.filename=R,offset=1000"},
		{"", "driver=raw,file.filename=R,offset=1k,size=1M"},
		{"-o 512", "driver=raw,file.filename=R,offset=1M,size=2M"},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			mine, theirs := imageOptsFiles(t, t.TempDir()), imageOptsFiles(t, t.TempDir())
			args := func(files map[string]string) []string {
				return append(strings.Fields(tc.flags), "--image-opts", expand(tc.opts, files))
			}
			q := startQnbd(t, serverConfig{Args: args(mine)})
			ref := startQemuNBD(t, serverConfig{Args: args(theirs)})
			cq, cr := dialRaw(t, "unix", q.Sock), dialRaw(t, "unix", ref.Sock)
			cq.negotiate(wireStructured, "")
			cr.negotiate(wireStructured, "")
			cq.close()
			cr.close()
			if cq.size != cr.size || cq.tflags != cr.tflags {
				t.Fatalf("%s %s: qnbd exports %d bytes (%v), qemu-nbd %d (%v)", tc.flags, tc.opts, cq.size, cq.tflags, cr.size, cr.tflags)
			}
			size := cr.size
			// Whole sectors only: qemu-nbd 7.2 cannot read a rounded tail (fidelity_offset_test.go).
			end := size &^ 511
			if tc.opts == "driver=raw,file.filename=R,offset=1000" {
				end = 16<<20 - 1000 - 8192
			}
			for j, at := range []uint64{0, 1 << 20, end - min(end, 8192)} {
				n := min(8192, end-min(end, at))
				if n == 0 {
					continue
				}
				req := nbd.Request{Type: nbd.CmdRead, Cookie: uint64(j + 1), Offset: at, Length: n}
				sameOutcome(t, fmt.Sprintf("%s: READ [%d,+%d)", tc.opts, at, n),
					exchangeOnce(t, q, wireSimple, false, req, nil),
					exchangeOnce(t, ref, wireSimple, false, req, nil))
			}
		})
	}
}

// TestImageOptsRefusalsMatchQemuNBD runs both servers on option strings qemu-nbd refuses and
// requires the same exit status and the same stderr, warnings included.
func TestImageOptsRefusalsMatchQemuNBD(t *testing.T) {
	t.Parallel()
	files := imageOptsFiles(t, t.TempDir())
	for _, tc := range []struct{ flags, opts string }{
		{"-f qcow2", "driver=qcow2,file.filename=Q"},
		{"", ""},
		{"", "Q"}, // the implied key is file=, a node name
		{"", "driver=raw,file=R"},
		{"", "driver=qcow2"},
		{"", "driver=qcow2,file.driver=file"},
		{"", "driver=nosuch,file.filename=R"},
		{"", "driver=qcow2,,file.filename=Q"},
		{"", "driver=qcow2,file.filename=R"},
		{"", "driver=qcow2,file.filename=" + filepath.Join(filepath.Dir(files["Q"]), "nosuch")},
		{"", "driver=qcow2,file.filename=Q,bogus=1"},
		{"", "driver=qcow2,file.filename=Q,bogus"},
		{"", "driver=qcow2,file.filename=Q,nobogus"},
		{"", "driver=qcow2,file.filename=Q,offset=1048576"},
		{"", "driver=raw,file.filename=R,l2-cache-size=1M"},
		{"", "driver=qcow2,file.filename=Q,file.bogus=1"},
		{"", "driver=qcow2,file.filename=Q,file.aio=native"},
		{"--aio=native", "driver=qcow2,file.filename=Q"},
		{"", "driver=qcow2,file.filename=Q,file.aio=bogus"},
		{"", "driver=qcow2,file.filename=Q,cache.direct=maybe"},
		{"", "driver=qcow2,file.filename=Q,read-only=on"},
		{"", "driver=qcow2,file.filename=Q,read-only"},
		{"", "driver=qcow2,file.filename=Q,read-only=maybe"},
		{"", "driver=qcow2,file.filename=O,backing=null"},
		{"", "driver=qcow2,file.filename=Q,cache-size=1M,l2-cache-size=2M,refcount-cache-size=1M"},
		{"", "driver=qcow2,file.filename=Q,l2-cache-size=2M,cache-size=1M"},
		{"", "driver=qcow2,file.filename=Q,l2-cache-entry-size=1000"},
		{"", "driver=qcow2,file.filename=Q,l2-cache-size=abc"},
		{"", "driver=qcow2,file.filename=Q,cache-clean-interval=-1"},
		{"", "driver=qcow2,file.filename=Q,cache-clean-interval=abc"},
		{"", "driver=raw,file.filename=R,offset=abc"},
		{"", "driver=raw,file.filename=R,size=-512"},
		{"", "driver=raw,file.filename=R,size=1000"},
		{"", "driver=raw,file.filename=R,offset=100000000"},
		{"", "driver=raw,file.filename=R,offset=1048576,size=100000000"},
	} {
		args := append(strings.Fields(tc.flags), "-k", filepath.Join(shortTempDir(t), "s"), "--image-opts", expand(tc.opts, files))
		got := runCode(t, append([]string{qnbdBin}, args...)...)
		want := runCode(t, append([]string{"qemu-nbd"}, args...)...)
		got.Stderr = strings.ReplaceAll("\n"+got.Stderr, "\nqnbd: ", "\nqemu-nbd: ")[1:]
		if got != want {
			t.Errorf("%s --image-opts %s:\nqnbd     exit %d %q\nqemu-nbd exit %d %q", tc.flags, tc.opts, got.Code, got.Stderr, want.Code, want.Stderr)
		}
	}
}
