// The byte layout against real QEMU: what qemu-nbd holds on each file equals Request.For,
// and what Lock holds stops qemu-img and qemu-io with QEMU's own messages.
package imagelock

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func qemuImg(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img %q: %v\n%s", args, err, out)
	}
}

// startQemuNbd serves an image with qemu-nbd and returns once it listens. The locks it holds
// are not settled then: it takes them on each file in steps, so callers wait for the state
// they expect with waitForLocks rather than reading it once.
func startQemuNbd(t *testing.T, args ...string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	cmd := exec.Command("qemu-nbd", append([]string{"-t", "-k", sock}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // this test's own qemu-nbd, by pid
		<-done
	})
	waitFor(t, 30*time.Second, func() (bool, string) {
		select {
		case <-done:
			t.Fatalf("qemu-nbd %q exited: %s", args, stderr.String())
		default:
		}
		_, err := os.Stat(sock)
		return err == nil, fmt.Sprintf("qemu-nbd %q has not created its socket", args)
	})
}

// waitFor polls cond until it reports true, and fails the test with cond's last description
// once the deadline passes. The deadline is generous: it bounds a hang, it is not a timing
// assertion, and a loaded CI machine can take seconds to schedule qemu-nbd.
func waitFor(t *testing.T, limit time.Duration, cond func() (ok bool, last string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitForLocks waits until the locks other processes hold on file are exactly held and
// notShared. An intermediate state (qemu-nbd has taken some of its locks but not all) is
// never accepted as the final one, however long it lasts; on timeout the test fails with
// the last state seen.
func waitForLocks(t *testing.T, file string, held, notShared Perm) {
	t.Helper()
	f := open(t, file, os.O_RDONLY)
	waitFor(t, 30*time.Second, func() (bool, string) {
		h, ns, err := Others(f)
		if err != nil {
			t.Fatal(err)
		}
		return h == held && ns == notShared, fmt.Sprintf(
			"%s: qemu-nbd holds %q and does not share %q; want held %q and not shared %q",
			filepath.Base(file), h, ns, held, notShared)
	})
}

// TestForMatchesQemuNbd serves images with qemu-nbd and compares the locks it holds on each
// host file with what Request.For gives for a qemu-nbd-like request.
func TestForMatchesQemuNbd(t *testing.T) {
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	qemuImg(t, "create", "-q", "-f", "qcow2", p("base.qcow2"), "1M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", p("base.qcow2"), "-F", "qcow2", p("over.qcow2"))
	qemuImg(t, "create", "-q", "-f", "raw", p("base.raw"), "1M")
	qemuImg(t, "create", "-q", "-f", "qcow2", "-b", p("base.raw"), "-F", "raw", p("overraw.qcow2"))
	qemuImg(t, "create", "-q", "-f", "qcow2", "-o", "data_file="+p("data.bin"), p("df.qcow2"), "1M")
	// qemu-nbd's export takes consistent read (and write without -r) and shares all but
	// resize: the export size is fixed.
	rw := Request{Perm: ConsistentRead | Write, Shared: All &^ Resize}
	ro := Request{Perm: ConsistentRead, Shared: All &^ Resize}
	for _, tc := range []struct {
		args  []string
		req   Request
		files map[string]Kind
	}{
		{[]string{"-f", "qcow2", p("base.qcow2")}, rw, map[string]Kind{p("base.qcow2"): Qcow2Image}},
		{[]string{"-r", "-f", "qcow2", p("base.qcow2")}, ro, map[string]Kind{p("base.qcow2"): Qcow2Image}},
		{[]string{"-f", "raw", p("base.raw")}, rw, map[string]Kind{p("base.raw"): RawImage}},
		{[]string{"-r", "-f", "raw", p("base.raw")}, ro, map[string]Kind{p("base.raw"): RawImage}},
		{[]string{"-f", "qcow2", p("over.qcow2")}, rw, map[string]Kind{p("over.qcow2"): Qcow2Image, p("base.qcow2"): Qcow2Backing}},
		{[]string{"-f", "qcow2", p("overraw.qcow2")}, rw, map[string]Kind{p("overraw.qcow2"): Qcow2Image, p("base.raw"): RawBacking}},
		{[]string{"-f", "qcow2", p("df.qcow2")}, rw, map[string]Kind{p("df.qcow2"): Qcow2Image, p("data.bin"): DataFile}},
		{[]string{"-r", "-f", "qcow2", p("df.qcow2")}, ro, map[string]Kind{p("df.qcow2"): Qcow2Image, p("data.bin"): DataFile}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			startQemuNbd(t, tc.args...)
			for file, kind := range tc.files {
				perm, shared := tc.req.For(kind)
				waitForLocks(t, file, perm, All&^shared)
			}
		})
	}
}

// TestQemuMeetsLock holds what qnbd holds for a read-write qcow2 export and runs QEMU's
// tools against the image.
func TestQemuMeetsLock(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "a.qcow2")
	qemuImg(t, "create", "-q", "-f", "qcow2", img, "1M")
	f := open(t, img, os.O_RDWR)
	perm, shared := Request{Perm: ConsistentRead | Write, Shared: All}.For(Qcow2Image)
	if err := Lock(f, perm, shared); err != nil {
		t.Fatal(err)
	}
	run := func(name string, args ...string) (string, int) {
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
	for _, tc := range []struct {
		name string
		args []string
		want string // "" = must succeed
	}{
		{"qemu-img", []string{"info", "a.qcow2"}, "qemu-img: Could not open 'a.qcow2': Failed to get shared \"write\" lock\nIs another process using the image [a.qcow2]?\n"},
		{"qemu-img", []string{"info", "-U", "a.qcow2"}, ""},
		{"qemu-img", []string{"check", "-r", "all", "a.qcow2"}, "qemu-img: Could not open 'a.qcow2': Failed to get \"write\" lock\nIs another process using the image [a.qcow2]?\n"},
		{"qemu-io", []string{"-c", "read 0 512", "a.qcow2"}, "qemu-io: can't open device a.qcow2: Failed to get \"write\" lock\nIs another process using the image [a.qcow2]?\n"},
		{"qemu-io", []string{"-r", "-U", "-c", "read 0 512", "a.qcow2"}, ""},
	} {
		out, code := run(tc.name, tc.args...)
		switch {
		case tc.want == "" && code != 0:
			t.Errorf("%s %q: exit %d, want success:\n%s", tc.name, tc.args, code, out)
		case tc.want != "" && (code != 1 || out != tc.want):
			t.Errorf("%s %q: exit %d, output:\n%s\nwant exit 1 and:\n%s", tc.name, tc.args, code, out, tc.want)
		}
	}
	// Once the file is closed QEMU opens it read-write.
	f.Close()
	if out, code := run("qemu-io", "-c", "read 0 512", "a.qcow2"); code != 0 {
		t.Errorf("qemu-io after Close: exit %d\n%s", code, out)
	}
}
