// End-to-end checks of the qnbd binary with real clients (qemu-io, qemu-img, nbdinfo) over
// Unix sockets and loopback TCP, plus its process behaviour: exit without -t, signals,
// --fork, --pid-file, socket activation, and one-line errors.
package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/syncbuf"
)

var qnbdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "qnbd-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	qnbdBin = filepath.Join(dir, "qnbd")
	if out, err := exec.Command("go", "build", "-o", qnbdBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building qnbd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running qnbd (or qemu-nbd).
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
	done   chan error // holds the exit status once the process has exited
}

// startProc starts cmd with its stderr collected in p.stderr, and kills it (by pid: only the
// process this test started) if it still runs when the test ends.
func startProc(t *testing.T, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, cmd: cmd, stderr: &syncbuf.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if p.running() {
			cmd.Process.Kill()
		}
		p.done <- <-p.done // wait for the exit; keep its status for a later wait
	})
	return p
}

func startQnbd(t *testing.T, args ...string) *proc {
	t.Helper()
	return startProc(t, exec.Command(qnbdBin, args...))
}

// wait returns the exit status, failing the test after timeout.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		if err != nil {
			p.t.Fatal(err)
		}
		return 0
	case <-time.After(timeout):
		p.t.Fatalf("qnbd still running after %v; stderr:\n%s", timeout, p.stderr)
		return -1
	}
}

func (p *proc) running() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return false
	default:
		return true
	}
}

// waitDial waits until network/addr accepts connections. For a Unix socket the file
// existing is not enough: it appears at bind, before listen, and a connect in between is
// refused (seen under load), so both kinds are dialled.
func waitDial(t *testing.T, network, addr string) {
	t.Helper()
	const limit = 30 * time.Second // a bound on a hang, not a timing assertion
	deadline := time.Now().Add(limit)
	for {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("nothing listening on %s %s after %v: %v", network, addr, limit, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func tool(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func image(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	return p
}

func unixURI(sock, export string) string {
	return "nbd+unix:///" + export + "?socket=" + sock
}

func TestQemuIOAndImgOverUnix(t *testing.T) {
	img := image(t, 16<<20)
	sock := filepath.Join(t.TempDir(), "s")
	p := startQnbd(t, "-t", "-f", "raw", "-k", sock, "-e", "4", "--discard=unmap", img)
	waitDial(t, "unix", sock)
	uri := unixURI(sock, "")
	tool(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 1M 64k", "-c", "write -z 4M 1M",
		"-c", "discard 1M 4k", "-c", "flush", uri)
	out := tool(t, "qemu-io", "-f", "raw", "-c", "read -P 0xab 1028k 60k", "-c", "read -P 0 1M 4k",
		"-c", "read -P 0 4M 1M", uri)
	if strings.Contains(out, "verification failed") {
		t.Fatalf("qemu-io read:\n%s", out)
	}
	// qemu-img compare reads the export through the NBD client against the file itself.
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri, img)
	// A sparse copy in, then compare.
	src := image(t, 16<<20)
	f, _ := os.OpenFile(src, os.O_WRONLY, 0)
	f.WriteAt(bytes.Repeat([]byte("qnbd"), 1<<16), 8<<20)
	f.Close()
	tool(t, "qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", src, uri)
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri)
	// nbdinfo sees the holes through base:allocation.
	m := tool(t, "nbdinfo", "--map", uri)
	if !strings.Contains(m, "hole,zero") || !strings.Contains(m, "data") {
		t.Errorf("nbdinfo --map:\n%s", m)
	}
	info := tool(t, "nbdinfo", uri)
	for _, want := range []string{"export-size: 16777216", "can_multi_conn: true", "can_trim: true"} {
		if !strings.Contains(info, want) {
			t.Errorf("nbdinfo lacks %q:\n%s", want, info)
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.stderr)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
}

func TestReadOnlyAndExports(t *testing.T) {
	a, b := image(t, 1<<20), image(t, 2<<20)
	sock := filepath.Join(t.TempDir(), "s")
	startQnbd(t, "-t", "-r", "-x", "first", "-D", "the first", "-k", sock, a,
		"--export", "second="+b+",readonly=off,description=two")
	waitDial(t, "unix", sock)
	list := tool(t, "nbdinfo", "--list", unixURI(sock, ""))
	for _, want := range []string{`export="first"`, "description: the first", `export="second"`,
		"description: two", "export-size: 2097152"} {
		if !strings.Contains(list, want) {
			t.Errorf("nbdinfo --list lacks %q:\n%s", want, list)
		}
	}
	out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write 0 512", unixURI(sock, "first")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "ermission") && !strings.Contains(string(out), "read-only") {
		t.Errorf("write to a read-only export: %v\n%s", err, out)
	}
	tool(t, "qemu-io", "-f", "raw", "-c", "write -P 7 0 512", unixURI(sock, "second"))
	data, _ := os.ReadFile(b)
	if data[0] != 7 {
		t.Errorf("write to the second export did not reach its file")
	}
}

func TestNonPersistentExit(t *testing.T) {
	img := image(t, 1<<20)
	sock := filepath.Join(t.TempDir(), "s")
	p := startQnbd(t, "-k", sock, img)
	waitDial(t, "unix", sock)
	// A connection that never negotiates does not end the server (qemu-nbd's rule).
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	time.Sleep(100 * time.Millisecond)
	if !p.running() {
		t.Fatalf("exited after a probe; stderr:\n%s", p.stderr)
	}
	tool(t, "qemu-io", "-f", "raw", "-c", "write -P 5 0 4k", unixURI(sock, ""))
	if code := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.stderr)
	}
	data, _ := os.ReadFile(img)
	if data[4095] != 5 {
		t.Fatalf("write not in the file after exit")
	}
}

func TestTCPLoopback(t *testing.T) {
	img := image(t, 1<<20)
	for _, host := range []string{"127.0.0.1", "::1"} {
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatalf("loopback %s: %v", host, err)
		}
		port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
		p := startQnbd(t, "-b", host, "-p", port, "-f", "raw", img)
		addr := net.JoinHostPort(host, port)
		waitDial(t, "tcp", addr)
		uri := "nbd://" + addr
		if host == "::1" {
			uri = "nbd://[::1]:" + port
		}
		tool(t, "qemu-io", "-f", "raw", "-c", "write -P 9 0 512", uri)
		// The waitDial probe and qemu-io were the only clients: without -t it exits.
		if code := p.wait(10 * time.Second); code != 0 {
			t.Fatalf("%s: exit %d; stderr:\n%s", host, code, p.stderr)
		}
	}
}

func TestOneLineErrors(t *testing.T) {
	dir := t.TempDir()
	q := filepath.Join(dir, "x.qcow2")
	// Version 4: QEMU probes a qcow2 magic as qcow2 only with a version of 2 or more (version
	// 0 probes as raw and is served, as qemu-nbd serves it: docs/probing.md).
	os.WriteFile(q, append([]byte("QFI\xfb\x00\x00\x00\x04"), make([]byte, 504)...), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-k", filepath.Join(dir, "s"), filepath.Join(dir, "missing.img")}, "Failed to blk_new_open"},
		{[]string{"-k", filepath.Join(dir, "s"), q}, "only versions 2 and 3 exist"},
		{[]string{"-k", filepath.Join(dir, "s"), "-f", "qcow2", q}, "only versions 2 and 3 exist"},
		{[]string{"-k", "relative", "x"}, "absolute"},
		{[]string{"-k", filepath.Join(dir, "s"), "--metrics-addr", "127.0.0.1", image(t, 4096)}, "metrics"},
		{[]string{"-k", filepath.Join(dir, "s"), "-l", "snap1", image(t, 4096)}, "qcow2"},
		{[]string{"-p", "notaport", image(t, 4096)}, "cannot listen"},
	} {
		cmd := exec.Command(qnbdBin, tc.args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 1 {
			t.Errorf("%q: %v, want exit 1", tc.args, err)
		}
		s := stderr.String()
		if strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "qnbd: ") || !strings.Contains(s, tc.want) {
			t.Errorf("%q: stderr %q, want one line with %q", tc.args, s, tc.want)
		}
	}
	// A getopt error is two lines, as qemu-nbd prints it: glibc's (with argv[0]) and the
	// pointer to --help (e2e's TestUsageErrorsMatchQemuNBD compares them with qemu-nbd's).
	var stderr bytes.Buffer
	cmd := exec.Command(qnbdBin, "--bogus")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || stderr.String() != qnbdBin+": unrecognized option '--bogus'\nqnbd: Try `"+qnbdBin+" --help' for more information.\n" {
		t.Errorf("--bogus: %v, %q", err, stderr.String())
	}
	for _, a := range []string{"--help", "-V"} {
		out, err := exec.Command(qnbdBin, a).Output()
		if err != nil || !strings.Contains(string(out), "qnbd") {
			t.Errorf("%s: %v %q", a, err, out)
		}
	}
}

func TestForkAndPidFile(t *testing.T) {
	dir := t.TempDir()
	img, sock, pidf := image(t, 1<<20), filepath.Join(dir, "s"), filepath.Join(dir, "pid")
	// stderr is a pipe, as in out=$(qnbd --fork ... 2>&1): the daemon must let go of it once
	// it serves (qemu-nbd's points fd 2 at /dev/null), or Run would wait for the daemon to exit.
	var errb syncbuf.Buffer
	cmd := exec.Command(qnbdBin, "--fork", "--pid-file", pidf, "-t", "-k", sock, img)
	cmd.Stderr = &errb
	ran := make(chan error, 1)
	go func() { ran <- cmd.Run() }()
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("--fork parent: %v\n%s", err, errb.String())
		}
	case <-time.After(30 * time.Second):
		if b, err := os.ReadFile(pidf); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		t.Fatalf("--fork parent with stderr on a pipe still waiting after 30 s (the daemon holds the pipe?)")
	}
	// The parent returned only once the child serves: no waiting needed.
	b, err := os.ReadFile(pidf)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid == cmd.Process.Pid {
		t.Fatalf("pid file %q (parent %d)", b, cmd.Process.Pid)
	}
	child, _ := os.FindProcess(pid)
	defer child.Kill()
	tool(t, "qemu-io", "-f", "raw", "-c", "write -P 3 0 512", unixURI(sock, ""))
	// A second server on the same pid file is refused while the first holds its lock.
	out, err := exec.Command(qnbdBin, "--pid-file", pidf, "-k", filepath.Join(dir, "s2"), img).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "pid file") {
		t.Errorf("second server on a locked pid file: %v %s", err, out)
	}
	child.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("forked server did not exit on SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	// A child that fails makes the parent fail with its message.
	var stderr bytes.Buffer
	cmd = exec.Command(qnbdBin, "--fork", "-k", filepath.Join(dir, "s3"), filepath.Join(dir, "missing"))
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "Failed to blk_new_open") {
		t.Errorf("--fork with a missing image: %v %q", err, stderr.String())
	}
}

func TestSocketActivation(t *testing.T) {
	img := image(t, 1<<20)
	sock := filepath.Join(t.TempDir(), "act.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ul := ln.(*net.UnixListener)
	ul.SetUnlinkOnClose(false)
	f, err := ul.File()
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	// LISTEN_PID must name qnbd itself: let a shell exec it with its own pid.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, qnbdBin, "-f", "raw", img)
	cmd.ExtraFiles = []*os.File{f}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		select {
		case <-done:
		default:
			cmd.Process.Kill()
			<-done
		}
	}()
	tool(t, "qemu-io", "-f", "raw", "-c", "write -P 4 0 512", "-c", "read -P 4 0 512", unixURI(sock, ""))
	select {
	case err := <-done:
		done <- err // for the deferred check
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute): // only a hang: a loaded CI machine is slow to reap
		t.Fatalf("socket-activated qnbd did not exit after its client")
	}
	// -k with socket activation is refused, as qemu-nbd does.
	cmd = exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, qnbdBin, "-k", sock, img)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "socket activation") {
		t.Errorf("-k with activation: %v %s", err, out)
	}
}

func TestHandshakeLimitFlag(t *testing.T) {
	img := image(t, 1<<20)
	sock := filepath.Join(t.TempDir(), "s")
	startQnbd(t, "-t", "--handshake-limit", "1", "-k", sock, img)
	waitDial(t, "unix", sock)
	// The clock starts before the dial, so the server's limit cannot have started earlier.
	start := time.Now()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 64)
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
	}
	// Not before the 1 s limit, and before the 10 s default: the flag took effect. The
	// upper bound is far from 1 s so that a loaded machine cannot trip it.
	if d := time.Since(start); d < time.Second || d > 9*time.Second {
		t.Errorf("idle handshake dropped after %v, want the 1s limit (not the 10s default)", d)
	}
}

// alive reports whether pid runs (a zombie waiting for init to reap it does not count).
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}
