// Reference servers (qemu-nbd, nbdkit) started on Unix sockets or loopback for the tests.
package libnbd

import (
	"bytes"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/loopport"
)

// server is a running reference NBD server.
type server struct {
	sock string // Unix socket path, "" for TCP
	port int    // TCP port on 127.0.0.1, 0 for Unix
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

// startServer runs argv (which must make the server listen on sock or on 127.0.0.1:port),
// waits until it accepts connections, and stops it at the end of the test.
func startServer(t *testing.T, sock string, port int, argv ...string) *server {
	t.Helper()
	s := &server{sock: sock, port: port, log: &bytes.Buffer{}}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", argv[0], s.log)
		}
	})
	network, addr := "unix", sock
	if sock == "" {
		network, addr = "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case err := <-exited:
			t.Fatalf("%v exited before listening: %v\n%s", argv, err, s.log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v not listening on %s after 10s: %v\n%s", argv, addr, err, s.log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// run runs a command and fails the test if it fails.
func run(t *testing.T, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", argv, err, out)
	}
	return string(out)
}

// newQcow2 creates an empty qcow2 image of the given size in a temp dir.
func newQcow2(t *testing.T, size string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", img, size)
	return img
}

// startQemuNBD serves img (qcow2) on a Unix socket with qemu-nbd; extra flags go before the
// file name. It returns the socket path.
func startQemuNBD(t *testing.T, img string, extra ...string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	argv := append([]string{"qemu-nbd", "-t", "-e", "8", "-f", "qcow2", "-k", sock}, extra...)
	startServer(t, sock, 0, append(argv, img)...)
	return sock
}

// startNbdkitMemory serves an nbdkit memory disk of the given size on a Unix socket.
func startNbdkitMemory(t *testing.T, size string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	startServer(t, sock, 0, "nbdkit", "-f", "--exit-with-parent", "-U", sock, "memory", size)
	return sock
}

// freePort returns a TCP port on 127.0.0.1, below the ephemeral range, that was free a
// moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	return loopport.Free(t)
}

// connect opens a handle, applies setup (may be nil), connects to sock and closes the handle
// at the end of the test.
func connect(t *testing.T, sock string, setup func(h *Handle) error) *Handle {
	t.Helper()
	h, err := Create()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if setup != nil {
		if err := setup(h); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.ConnectUnix(sock); err != nil {
		t.Fatal(err)
	}
	return h
}

// pattern returns n bytes that identify (seed, position) so misplaced data shows.
func pattern(seed byte, n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed ^ byte(i) ^ byte(i>>8)*31
	}
	return p
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustBool(t *testing.T, what string, got bool, err error, want bool) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}
