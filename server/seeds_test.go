// The committed fuzz seed corpus: our encoder's sessions plus byte streams recorded from real
// clients (nbdinfo, qemu-io, qemu-img) talking to this server, checked against testdata/fuzz
// (regenerate with QNBD_WRITE_FUZZ_SEEDS=1 go test -run TestFuzzSeeds ./server/).
package server

import (
	"bytes"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/fuzzseed"
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

// TestFuzzSeeds regenerates the seeds of FuzzHandshake and FuzzTransmission and fails unless
// testdata/fuzz holds each of them byte for byte (fuzzseed.Sync; QNBD_WRITE_FUZZ_SEEDS=1
// writes them instead).
func TestFuzzSeeds(t *testing.T) {
	var seeds []fuzzseed.Seed
	for i, s := range handshakeSeeds() {
		seeds = append(seeds, fuzzseed.Seed{Target: "FuzzHandshake", Name: fmt.Sprintf("encoder-%02d", i), Data: s})
	}
	for i, s := range transmissionSeeds() {
		seeds = append(seeds, fuzzseed.Seed{Target: "FuzzTransmission", Name: fmt.Sprintf("encoder-%02d", i), Data: s})
	}
	seeds = append(seeds, recordedSeeds(t)...)
	fuzzseed.Sync(t, filepath.Join("testdata", "fuzz"), seeds)
}

// recordedSeeds are the client streams of real clients' sessions with this server, as
// FuzzHandshake seeds, with their cookies normalised (normalizeCookies).
func recordedSeeds(t *testing.T) []fuzzseed.Seed {
	var seeds []fuzzseed.Seed

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
			seeds = append(seeds, fuzzseed.Seed{Target: "FuzzHandshake", Name: fmt.Sprintf("%s-%d", cl.name, i),
				Data: normalizeCookies(b.Bytes())})
		}
		rl.mu.Unlock()
	}
	return seeds
}

// normalizeCookies returns session, a client's side of a connection, with the cookie of each
// transmission request replaced by the order in which that cookie first appeared (1, 2, ...).
// QEMU's cookies carry a pointer, so they change from run to run; the server only echoes
// cookies, so the renumbered stream drives it the same way. The options are skipped
// (IHAVEOPT, option, length, data) up to the first bytes that are not one; requests follow,
// compact or extended by their magic, each WRITE (or extended request with PAYLOAD_LEN)
// followed by its payload. Anything that does not parse is left as it is.
func normalizeCookies(session []byte) []byte {
	out := append([]byte(nil), session...)
	pos := 4 // client flags
	for len(out)-pos >= optHeaderLen {
		b := readBuf(out[pos:])
		if b.u64() != MagicIHaveOpt {
			break
		}
		b.u32()
		pos += optHeaderLen + int(b.u32())
	}
	ids := map[uint64]uint64{}
	for len(out)-pos >= compactRequestLen {
		extended := be.Uint32(out[pos:]) == MagicExtendedRequest
		n := requestLen(extended)
		if len(out)-pos < n {
			break
		}
		r, ok := decodeRequest(out[pos:pos+n], extended)
		if !ok {
			break
		}
		id, seen := ids[r.Cookie]
		if !seen {
			id = uint64(len(ids) + 1)
			ids[r.Cookie] = id
		}
		r.Cookie = id
		copy(out[pos:], AppendRequest(nil, r, extended))
		pos += n
		if r.Type == CmdWrite || (extended && r.Flags&CmdFlagPayloadLen != 0) {
			if r.Length > uint64(len(out)-pos) {
				break
			}
			pos += int(r.Length)
		}
	}
	return out
}
