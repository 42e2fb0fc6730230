// Image locks: with an image held by qemu-nbd or qnbd (read-write or read-only), every
// qnbd-img command gives exactly qemu-img's output and status, and a refused command leaves
// the image untouched.
package main

import (
	"bytes"
	"crypto/sha256"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/imagelock"
)

// holdImage starts a server (qemu-nbd or the qnbd binary at prog) on the image named last in
// args and returns once it listens and holds exactly the locks an NBD export of that image
// takes (read-only with -r, the format from -f). qemu-nbd takes its locks in steps, so a state
// in between is waited through, never compared; the server is killed when the test ends.
func holdImage(t *testing.T, dir, prog string, args ...string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	cmd := exec.Command(prog, append([]string{"-t", "-k", sock}, args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // by pid: the server this test started
		<-done
	})
	f, err := os.Open(filepath.Join(dir, args[len(args)-1]))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	wantHeld, wantNotShared := exportLocks(args)
	const limit = 30 * time.Second // bounds a hang on a loaded machine; not a timing assertion
	deadline := time.Now().Add(limit)
	for {
		held, notShared, err := imagelock.Others(f)
		if err != nil {
			t.Fatal(err)
		}
		_, serr := os.Stat(sock)
		if serr == nil && held == wantHeld && notShared == wantNotShared {
			return
		}
		select {
		case <-done:
			t.Fatalf("%s %q exited: %s", prog, args, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %q after %v: socket: %v; holds %q and does not share %q, want %q and %q",
				prog, args, limit, serr, held, notShared, wantHeld, wantNotShared)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exportLocks is what an NBD server holds on the image of a qemu-nbd command line: consistent
// read, write unless -r, and every sharing but resize (the export size is fixed).
func exportLocks(args []string) (held, notShared imagelock.Perm) {
	req := imagelock.Request{Perm: imagelock.ConsistentRead | imagelock.Write, Shared: imagelock.All &^ imagelock.Resize}
	kind := imagelock.RawImage
	for i, a := range args {
		switch {
		case a == "-r":
			req.Perm &^= imagelock.Write
		case a == "-f" && i+1 < len(args) && args[i+1] == "qcow2":
			kind = imagelock.Qcow2Image
		}
	}
	perm, shared := req.For(kind)
	return perm, imagelock.All &^ shared
}

func hashFile(t *testing.T, p string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestLocksMatchQemuImg(t *testing.T) {
	t.Parallel()
	qnbd := filepath.Join(t.TempDir(), "qnbd")
	if out, err := exec.Command("go", "build", "-o", qnbd, "../qnbd").CombinedOutput(); err != nil {
		t.Fatalf("building qnbd: %v\n%s", err, out)
	}
	for _, h := range []struct {
		name, prog, format string
		ro                 bool
	}{
		{"qemu-nbd qcow2 rw", "qemu-nbd", "qcow2", false},
		{"qemu-nbd qcow2 ro", "qemu-nbd", "qcow2", true},
		{"qnbd qcow2 rw", qnbd, "qcow2", false},
		{"qnbd qcow2 ro", qnbd, "qcow2", true},
		{"qemu-nbd raw rw", "qemu-nbd", "raw", false},
		{"qnbd raw rw", qnbd, "raw", false},
	} {
		t.Run(h.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img, f := "img."+h.format, h.format
			sh(t, dir, "qemu-img", "create", "-q", "-f", f, img, "1M")
			var extra [][]string
			if f == "raw" {
				// The raw image is also the data file of a qcow2 image.
				sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file="+img+",data_file_raw=on", "df.qcow2", "1M")
				extra = [][]string{{"info", "df.qcow2"}, {"map", "--output=json", "df.qcow2"},
					{"map", "-U", "--output=json", "df.qcow2"}, {"check", "df.qcow2"}}
				// Not compared: check -r on df.qcow2. QEMU opens the whole image and so also
				// locks the data file for writing; qnbd-img's check reads and repairs the
				// image file only and locks only that.
			}
			sh(t, dir, "qemu-io", "-f", f, "-c", "write -q -P 7 0 64k", img)
			sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "other.qcow2", "1M")
			sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", img, "-F", f, "ov.qcow2")
			sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "ov.qcow2", "-F", "qcow2", "ov3.qcow2")
			if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			sh(t, dir, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "../ov3.qcow2", "-F", "qcow2", "sub/ov4.qcow2")
			args := []string{"-f", f, img}
			if h.ro {
				args = append([]string{"-r"}, args...)
			}
			holdImage(t, dir, h.prog, args...)
			for _, cmd := range [][]string{
				{"info", img},
				{"info", "-U", img},
				{"info", "--backing-chain", "ov.qcow2"},
				{"map", "--output=json", "-f", f, img},
				{"map", "-U", "--output=json", "-f", f, img},
				{"map", "--output=json", "ov.qcow2"},
				{"map", "-U", "--output=json", "ov.qcow2"},
				{"check", "-f", f, img},
				{"check", "-U", "-f", f, img},
				{"check", "-r", "all", "-f", f, img},
				{"check", "-r", "leaks", "-f", f, img},
				{"check", "-U", "-r", "all", "-f", f, img},
				{"compare", "-f", f, "-F", "qcow2", img, "other.qcow2"},
				{"compare", "-U", "-f", f, "-F", "qcow2", img, "other.qcow2"},
				{"compare", "ov.qcow2", "other.qcow2"},
				{"convert", "-f", f, "-O", "raw", img, "out.raw"},
				{"convert", "-U", "-f", f, "-O", "qcow2", img, "out.qcow2"},
				{"convert", "-n", "-O", f, "other.qcow2", img},
				{"resize", "-f", f, img, "2M"},
				{"bitmap", "--clear", "-f", f, img, "b"},
				{"bitmap", "--merge", "b", "-b", img, "-F", f, "other.qcow2", "b"},
				{"create", "-f", "qcow2", "-b", img, "-F", f, "ov2.qcow2"},
				// Deeper chains: QEMU nests "Could not open backing file: " and names the
				// held file through the chain of relative names.
				{"map", "--output=json", "ov3.qcow2"},
				{"map", "--output=json", "sub/ov4.qcow2"},
				{"map", "--output=json", filepath.Join(dir, "sub/ov4.qcow2")},
			} {
				same(t, dir, cmd...)
			}
			for _, cmd := range extra {
				same(t, dir, cmd...)
			}
			// Creating over the held image, or converting into it, is refused before
			// anything is written.
			before := hashFile(t, filepath.Join(dir, img))
			for _, cmd := range [][]string{
				{"create", "-q", "-f", f, img, "1M"},
				{"convert", "-O", f, "other.qcow2", img},
			} {
				if r := same(t, dir, cmd...); r.code == 0 || !strings.Contains(r.stderr, "lock") {
					t.Errorf("%q over a held image: %v", cmd, r)
				}
				if hashFile(t, filepath.Join(dir, img)) != before {
					t.Fatalf("%q changed the held image", cmd)
				}
			}
		})
	}
}
