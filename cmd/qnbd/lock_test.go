// Image locks against real QEMU: qnbd refuses what qemu-nbd refuses (and with the same
// reason), QEMU's tools refuse an image qnbd serves with their own messages, and the locks
// cover backing and data files and go away when qnbd exits.
package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/imagelock"
)

// nbdServer is a running qnbd or qemu-nbd.
type nbdServer struct {
	p    *proc
	sock string
}

// startServer starts prog ("qnbd" or "qemu-nbd") on a fresh Unix socket with args, in the
// working directory dir ("" = this one; QEMU resolves a relative data file name there).
func startServer(t *testing.T, dir, prog string, args ...string) *nbdServer {
	t.Helper()
	bin := qnbdBin
	if prog == "qemu-nbd" {
		bin = "qemu-nbd"
	}
	sock := filepath.Join(t.TempDir(), "s")
	cmd := exec.Command(bin, append([]string{"-t", "-k", sock}, args...)...)
	cmd.Dir = dir
	return &nbdServer{p: startProc(t, cmd), sock: sock}
}

// serving waits until s answers an NBD client (its images are open: qnbd listens before it
// opens them) and reports true, or until it exits and reports false.
func (s *nbdServer) serving(t *testing.T) bool {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if !s.p.running() {
			return false
		}
		if _, err := os.Stat(s.sock); err == nil {
			cmd := exec.Command("nbdinfo", "--size", "nbd+unix:///?socket="+s.sock)
			if cmd.Run() == nil {
				return true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%q neither serves nor exits; stderr:\n%s", s.p.cmd.Args, s.p.stderr)
	return false
}

// mustServe starts a server that must come up.
func mustServe(t *testing.T, dir, prog string, args ...string) *nbdServer {
	t.Helper()
	s := startServer(t, dir, prog, args...)
	if !s.serving(t) {
		t.Fatalf("%s %q exited: %s", prog, args, s.p.stderr)
	}
	return s
}

// lockPhrase extracts QEMU's lock message from a line of output.
var lockPhrase = regexp.MustCompile(`Failed to get (shared )?"[a-z ]+" lock`)

// TestLockMatrixVsQemuNbd: with an image served by qemu-nbd or qnbd, read-write or read-only,
// a second qnbd comes up exactly when a second qemu-nbd with the same options does, and when
// refused it names the same lock in one line and exits 1.
func TestLockMatrixVsQemuNbd(t *testing.T) {
	for _, format := range []string{"qcow2", "raw"} {
		for _, first := range []struct {
			prog string
			ro   bool
		}{{"qemu-nbd", false}, {"qemu-nbd", true}, {"qnbd", false}, {"qnbd", true}} {
			name := fmt.Sprintf("%s/%s-rw=%v", format, first.prog, !first.ro)
			t.Run(name, func(t *testing.T) {
				img := filepath.Join(t.TempDir(), "img."+format)
				tool(t, "qemu-img", "create", "-q", "-f", format, img, "1M")
				args := []string{"-f", format, img}
				if first.ro {
					args = append([]string{"-r"}, args...)
				}
				mustServe(t, "", first.prog, args...)
				for _, second := range [][]string{{"-f", format, img}, {"-r", "-f", format, img}} {
					q := startServer(t, "", "qemu-nbd", second...)
					qOK := q.serving(t)
					s := startServer(t, "", "qnbd", second...)
					sOK := s.serving(t)
					if qOK != sOK {
						t.Errorf("second server %q: qemu-nbd serves=%v, qnbd serves=%v\nqemu-nbd: %s\nqnbd: %s",
							second, qOK, sOK, q.p.stderr, s.p.stderr)
						continue
					}
					if sOK {
						continue
					}
					if code := s.p.wait(time.Second); code != 1 {
						t.Errorf("refused qnbd %q exited %d, want 1", second, code)
					}
					got, want := s.p.stderr.String(), q.p.stderr.String()
					if strings.Count(got, "\n") != 1 || lockPhrase.FindString(got) == "" ||
						lockPhrase.FindString(got) != lockPhrase.FindString(want) {
						t.Errorf("refused qnbd %q said:\n%s\nwant one line naming qemu-nbd's lock:\n%s", second, got, want)
					}
				}
			})
		}
	}
}

// runIn runs a tool in dir and returns its combined output and exit code.
func runIn(t *testing.T, dir, name string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

// TestQemuToolsMeetQnbd: QEMU's tools against images qnbd serves, each step also run while
// qemu-nbd serves the same image with the same options: the output must be the same.
func TestQemuToolsMeetQnbd(t *testing.T) {
	dir := t.TempDir()
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "base.qcow2"), "1M")
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", filepath.Join(dir, "top.qcow2"))
	// qemu-img create puts a relative data file in its working directory.
	if out, code := runIn(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=df.bin", "df.qcow2", "1M"); code != 0 {
		t.Fatal(out)
	}
	locked := func(file string) string {
		return fmt.Sprintf("Is another process using the image [%s]?\n", file)
	}
	type step struct {
		tool string
		args []string
		want string // "" = succeeds; else the whole output, and exit 1
	}
	for _, tc := range []struct {
		serve []string
		steps []step
	}{
		{[]string{"top.qcow2"}, []step{
			{"qemu-img", []string{"info", "top.qcow2"}, "qemu-img: Could not open 'top.qcow2': Failed to get shared \"write\" lock\n" + locked("top.qcow2")},
			{"qemu-img", []string{"info", "-U", "top.qcow2"}, ""},
			{"qemu-img", []string{"check", "top.qcow2"}, "qemu-img: Could not open 'top.qcow2': Failed to get shared \"write\" lock\n" + locked("top.qcow2")},
			{"qemu-io", []string{"-c", "read -q 0 512", "top.qcow2"}, "qemu-io: can't open device top.qcow2: Failed to get \"write\" lock\n" + locked("top.qcow2")},
			// The backing file is read by the server: readers may come, writers may not.
			{"qemu-img", []string{"info", "base.qcow2"}, ""},
			{"qemu-io", []string{"-r", "-c", "read -q 0 512", "base.qcow2"}, ""},
			{"qemu-io", []string{"-c", "write -q 0 512", "base.qcow2"}, "qemu-io: can't open device base.qcow2: Failed to get \"write\" lock\n" + locked("base.qcow2")},
		}},
		{[]string{"df.qcow2"}, []step{
			{"qemu-img", []string{"info", "df.qcow2"}, "qemu-img: Could not open 'df.qcow2': Failed to get shared \"write\" lock\n" + locked("df.qcow2")},
			// The data file refuses a resize, but (as in QEMU) not a raw writer.
			{"qemu-img", []string{"resize", "-f", "raw", "df.bin", "2M"}, "qemu-img: Could not open 'df.bin': Failed to get \"resize\" lock\n" + locked("df.bin")},
			{"qemu-io", []string{"-f", "raw", "-c", "read -q 0 512", "df.bin"}, ""},
		}},
		{[]string{"-r", "top.qcow2"}, []step{
			{"qemu-img", []string{"info", "top.qcow2"}, ""},
			{"qemu-img", []string{"check", "top.qcow2"}, ""},
			{"qemu-io", []string{"-c", "write -q 0 512", "top.qcow2"}, "qemu-io: can't open device top.qcow2: Failed to get \"write\" lock\n" + locked("top.qcow2")},
		}},
	} {
		args := append([]string{"-f", "qcow2"}, tc.serve...)
		args[len(args)-1] = filepath.Join(dir, args[len(args)-1])
		type result struct {
			out  string
			code int
		}
		results := map[string][]result{}
		for _, prog := range []string{"qemu-nbd", "qnbd"} {
			s := mustServe(t, dir, prog, args...)
			for _, st := range tc.steps {
				out, code := runIn(t, dir, st.tool, st.args...)
				results[prog] = append(results[prog], result{out, code})
			}
			// A clean stop releases everything.
			s.p.cmd.Process.Signal(syscall.SIGTERM)
			if code := s.p.wait(10 * time.Second); code != 0 && prog == "qnbd" {
				t.Fatalf("qnbd exited %d: %s", code, s.p.stderr)
			}
			for _, f := range []string{"top.qcow2", "base.qcow2", "df.qcow2", "df.bin"} {
				fh, err := os.Open(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				held, notShared, err := imagelock.Others(fh)
				fh.Close()
				if err != nil || held != 0 || notShared != 0 {
					t.Errorf("%s after %s exited: held %q, not shared %q, %v", f, prog, held, notShared, err)
				}
			}
		}
		for i, st := range tc.steps {
			q, r := results["qemu-nbd"][i], results["qnbd"][i]
			switch {
			case r != q:
				t.Errorf("%q served; %s %q:\nwith qnbd (exit %d):\n%s\nwith qemu-nbd (exit %d):\n%s", tc.serve, st.tool, st.args, r.code, r.out, q.code, q.out)
			case st.want == "" && r.code != 0:
				t.Errorf("qnbd %q serving; %s %q: exit %d, want success:\n%s", tc.serve, st.tool, st.args, r.code, r.out)
			case st.want != "" && (r.code != 1 || r.out != st.want):
				t.Errorf("qnbd %q serving; %s %q: exit %d:\n%s\nwant exit 1 and:\n%s", tc.serve, st.tool, st.args, r.code, r.out, st.want)
			}
		}
	}
}

// TestForceShare: -U serves an image qemu-nbd writes (read-only), and is refused without -r.
func TestForceShare(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
	mustServe(t, "", "qemu-nbd", "-f", "qcow2", img)
	if s := startServer(t, "", "qnbd", "-r", img); s.serving(t) {
		t.Fatal("qnbd -r served an image qemu-nbd writes")
	}
	mustServe(t, "", "qnbd", "-r", "-U", img)
	mustServe(t, "", "qnbd", "-s", "--force-share", img)
	s := startServer(t, "", "qnbd", "-U", img)
	if code := s.p.wait(10 * time.Second); code != 1 ||
		s.p.stderr.String() != "qnbd: '"+img+"': force-share=on can only be used with read-only images\n" {
		t.Errorf("qnbd -U (read-write): exit %d, %q", code, s.p.stderr)
	}
}

// TestLockEveryCacheMode: the O_DIRECT opener (--cache=none, directsync) locks as the
// default one does.
func TestLockEveryCacheMode(t *testing.T) {
	dir := t.TempDir()
	tool(t, "qemu-img", "create", "-q", "-f", "qcow2", filepath.Join(dir, "a.qcow2"), "1M")
	for _, mode := range []string{"none", "directsync", "writethrough", "unsafe"} {
		s := mustServe(t, dir, "qnbd", "--cache="+mode, "a.qcow2")
		out, code := runIn(t, dir, "qemu-img", "info", "a.qcow2")
		if want := "qemu-img: Could not open 'a.qcow2': Failed to get shared \"write\" lock\n" +
			"Is another process using the image [a.qcow2]?\n"; code != 1 || out != want {
			t.Errorf("--cache=%s: qemu-img info: exit %d:\n%s", mode, code, out)
		}
		s.p.cmd.Process.Signal(syscall.SIGTERM)
		s.p.wait(10 * time.Second)
	}
}
