// Test harness: serve an image through this package in-process, or through qemu-nbd, on a
// Unix socket, and read both with nbdinfo and libnbd.
package qcow2export

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qnbd/qnbd/e2e/libnbd"
	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

// serveOpts configure one in-process or qemu-nbd export.
type serveOpts struct {
	readOnly     bool
	discard      bool // --discard=unmap
	detectZeroes server.DetectZeroes
	format       string // qemu-nbd -f, default qcow2
}

// serveQnbd opens path with the engine and serves it in-process on a fresh Unix socket; the
// image is closed (flushed, dirty bit cleared) when the test ends, or earlier by the returned
// stop function.
func serveQnbd(t *testing.T, path string, o serveOpts) (sock string, stop func()) {
	t.Helper()
	img, err := qcow2.Open(path, qcow2.OpenOptions{ReadOnly: o.readOnly})
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	b := New(img, Options{Discard: o.discard})
	sock = filepath.Join(t.TempDir(), "qnbd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &server.Server{Config: server.Config{Exports: []*server.Export{{
		Backend: b, ReadOnly: o.readOnly, MultiConn: true, Trim: o.discard,
		DetectZeroes: o.detectZeroes, AllocationDepth: true,
	}}}}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
		b.Close()
		if err := img.Close(); err != nil {
			t.Errorf("close %s: %v", path, err)
		}
	}
	t.Cleanup(stop)
	return sock, stop
}

// serveQemu serves path with qemu-nbd on a fresh Unix socket until stop or the end of the test.
func serveQemu(t *testing.T, path string, o serveOpts) (sock string, stop func()) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "qemu.sock")
	format := o.format
	if format == "" {
		format = "qcow2"
	}
	args := []string{"-t", "-A", "-e", "0", "-k", sock, "-f", format}
	if o.readOnly {
		args = append(args, "-r")
	}
	if o.discard {
		args = append(args, "--discard=unmap")
	}
	switch o.detectZeroes {
	case server.DetectZeroesOn:
		args = append(args, "--detect-zeroes=on")
	case server.DetectZeroesUnmap:
		args = append(args, "--detect-zeroes=unmap")
	}
	cmd := exec.Command("qemu-nbd", append(args, path)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(os.Interrupt) // by pid: the process this test started
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock, stop
		}
		select {
		case err := <-done:
			t.Fatalf("qemu-nbd exited: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qemu-nbd did not listen on %s\n%s", sock, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func uri(sock string) string { return "nbd+unix:///?socket=" + sock }

// extent is one line of nbdinfo --map: a run and its type (flags, or depth).
type extent struct {
	Off, Len uint64
	Type     uint32
}

func (e extent) String() string { return fmt.Sprintf("[%d,+%d)=%d", e.Off, e.Len, e.Type) }

// nbdMap runs nbdinfo --map=context and returns its extents with neighbours of the same type
// merged (servers may split a run between replies anywhere).
func nbdMap(t *testing.T, sock, context string) []extent {
	t.Helper()
	out, err := exec.Command("nbdinfo", "--map="+context, uri(sock)).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdinfo --map=%s: %v\n%s", context, err, out)
	}
	var ext []extent
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			t.Fatalf("nbdinfo line %q", line)
		}
		off, err1 := strconv.ParseUint(f[0], 10, 64)
		n, err2 := strconv.ParseUint(f[1], 10, 64)
		typ, err3 := strconv.ParseUint(f[2], 10, 32)
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("nbdinfo line %q", line)
		}
		if k := len(ext) - 1; k >= 0 && ext[k].Type == uint32(typ) && ext[k].Off+ext[k].Len == off {
			ext[k].Len += n
			continue
		}
		ext = append(ext, extent{off, n, uint32(typ)})
	}
	return ext
}

// connect opens a libnbd handle on sock with both metadata contexts requested.
func connect(t *testing.T, sock string) *libnbd.Handle {
	t.Helper()
	h, err := libnbd.Create()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	for _, c := range []string{libnbd.ContextBaseAllocation, "qemu:allocation-depth"} {
		if err := h.AddMetaContext(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.ConnectUnix(sock); err != nil {
		t.Fatalf("connect %s: %v", sock, err)
	}
	return h
}

// copyFile copies src to a new file in dir and returns its path.
func copyFile(t *testing.T, src, dir string) string {
	t.Helper()
	dst := filepath.Join(dir, filepath.Base(src))
	out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput()
	if err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	return dst
}

// qemuImg runs qemu-img and fails the test on error.
func qemuImg(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("qemu-img", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img %q: %v\n%s", args, err, out)
	}
	return string(out)
}
