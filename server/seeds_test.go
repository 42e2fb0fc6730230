// Regenerates the committed fuzz seed corpus: our encoder's sessions plus byte streams
// recorded from real clients (nbdinfo, qemu-io, qemu-img) talking to this server. Run with
// QNBD_WRITE_FUZZ_SEEDS=1 go test -run TestWriteFuzzSeeds ./server/
package server

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// recordingListener keeps a copy of every byte each client sends.
type recordingListener struct {
	net.Listener
	mu       sync.Mutex
	sessions []*bytes.Buffer
}

type recordingConn struct {
	net.Conn
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.buf.Write(p[:n])
	c.mu.Unlock()
	return n, err
}

func (l *recordingListener) Accept() (net.Conn, error) {
	nc, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	b := &bytes.Buffer{}
	l.sessions = append(l.sessions, b)
	return &recordingConn{Conn: nc, mu: &l.mu, buf: b}, nil
}

func writeSeed(t *testing.T, target, name string, data []byte) {
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(data)) + ")\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("QNBD_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set QNBD_WRITE_FUZZ_SEEDS=1 to regenerate testdata/fuzz")
	}
	for i, s := range handshakeSeeds() {
		writeSeed(t, "FuzzHandshake", fmt.Sprintf("encoder-%02d", i), s)
	}
	for i, s := range transmissionSeeds() {
		writeSeed(t, "FuzzTransmission", fmt.Sprintf("encoder-%02d", i), s)
	}

	mem := newMem(256 << 10)
	s := &Server{Config: Config{Exports: []*Export{
		{Name: "", Backend: mem, Trim: true, AllocationDepth: true, Description: "seed"},
	}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := &recordingListener{Listener: ln}
	go s.Serve(rl)
	defer s.Close()
	uri := "nbd://" + ln.Addr().String()
	clients := []struct {
		name string
		argv []string
	}{
		{"nbdinfo", []string{"nbdinfo", uri}},
		{"nbdinfo-list", []string{"nbdinfo", "--list", uri}},
		{"nbdinfo-map", []string{"nbdinfo", "--map", uri}},
		{"nbdinfo-depth", []string{"nbdinfo", "--map=qemu:allocation-depth", uri}},
		{"qemu-io", []string{"qemu-io", "-f", "raw", "-c", "write -P 0x5a 4096 65536",
			"-c", "read -P 0x5a 4096 65536", "-c", "flush", "-c", "discard 0 4096",
			"-c", "write -z 131072 8192", "-c", "write -z -u 139264 4096", "-c", "aio_write -P 1 0 512",
			"-c", "aio_flush", uri}},
		{"qemu-img-map", []string{"qemu-img", "map", "--output=json", "-f", "raw", uri}},
		{"qemu-img-info", []string{"qemu-img", "info", "-f", "raw", uri}},
	}
	for _, cl := range clients {
		rl.mu.Lock()
		before := len(rl.sessions)
		rl.mu.Unlock()
		out, err := exec.Command(cl.argv[0], cl.argv[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cl.name, err, out)
		}
		waitFor(t, "sessions to end", func() bool { return s.numConns() == 0 })
		rl.mu.Lock()
		for i, b := range rl.sessions[before:] {
			writeSeed(t, "FuzzHandshake", fmt.Sprintf("%s-%d", cl.name, i), b.Bytes())
		}
		rl.mu.Unlock()
	}
}
