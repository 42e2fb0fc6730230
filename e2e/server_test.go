// Server processes under test: qnbd (and qemu-nbd as the reference) on Unix sockets or
// loopback TCP, readiness by connecting, and the stop checks (SIGTERM, exit 0, no race).
package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/loopport"
	"github.com/qnbd/qnbd/internal/testing/raceenv"
	"github.com/qnbd/qnbd/internal/testing/syncbuf"
	nbd "github.com/qnbd/qnbd/server"
)

// serverConfig says how to start a server.
type serverConfig struct {
	// Args are the flags and file operands, without the listening flags (-k, -b, -p) and -t.
	Args []string
	// TCP listens on 127.0.0.1 at a free port instead of a Unix socket.
	TCP bool
	// OneShot leaves out -t: the server exits when its last client disconnects.
	OneShot bool
	// Metrics adds --metrics-addr on a free loopback port (qnbd only).
	Metrics bool
	// MayRefuse lets the server exit before it listens (an image or option it refuses):
	// startServer then returns a server whose Refused reports it, instead of failing.
	MayRefuse bool
	// Race runs qnbd built with the race detector (when the tests are): for tests that drive
	// one server with concurrent requests or connections, where a data race could show.
	Race bool
}

// server is a running NBD server process started by a test.
type server struct {
	t    *testing.T
	bin  string
	Sock string // Unix socket path, "" with TCP
	Port int    // TCP port on 127.0.0.1, 0 with a Unix socket
	// MetricsAddr is host:port of --metrics-addr, "" without metrics.
	MetricsAddr string

	cmd                *exec.Cmd
	out                *syncbuf.Buffer
	exited             chan struct{}
	waitErr            error
	stopped            bool
	mayRefuse, refused bool
}

// Refused reports whether a server started with MayRefuse exited before listening; its
// output says why.
func (s *server) Refused() bool { return s.refused }

// startQnbd starts the qnbd under test and stops it at the end of the test with the full
// stop check, unless the test stopped or killed it first.
func startQnbd(t *testing.T, cfg serverConfig) *server {
	t.Helper()
	if cfg.Race {
		return startServer(t, qnbdRaceBin, cfg)
	}
	return startServer(t, qnbdBin, cfg)
}

// startQemuNBD starts qemu-nbd, the reference server, with the same conventions.
func startQemuNBD(t *testing.T, cfg serverConfig) *server {
	t.Helper()
	return startServer(t, "qemu-nbd", cfg)
}

func startServer(t *testing.T, bin string, cfg serverConfig) *server {
	t.Helper()
	// A port can be taken by another test between the choice and the bind: then the server
	// exits at once with "Address already in use", and a new port is tried.
	for attempt := 1; ; attempt++ {
		s := launchServer(t, bin, cfg)
		if s.waitReady(attempt < maxBindAttempts) {
			return s
		}
		t.Logf("%s: port taken before it bound, attempt %d: %s", bin, attempt, s.out)
	}
}

// maxBindAttempts bounds the retries of a server whose TCP port was taken before it bound.
const maxBindAttempts = 5

// launchServer starts bin as cfg says, without waiting for it to listen.
func launchServer(t *testing.T, bin string, cfg serverConfig) *server {
	t.Helper()
	s := &server{t: t, bin: bin, out: &syncbuf.Buffer{}, exited: make(chan struct{}), mayRefuse: cfg.MayRefuse}
	var args []string
	if !cfg.OneShot {
		args = append(args, "-t")
	}
	if cfg.TCP {
		s.Port = freePort(t)
		args = append(args, "-b", "127.0.0.1", "-p", strconv.Itoa(s.Port))
	} else {
		s.Sock = filepath.Join(shortTempDir(t), "nbd.sock")
		args = append(args, "-k", s.Sock)
	}
	if cfg.Metrics {
		s.MetricsAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
		args = append(args, "--metrics-addr", s.MetricsAddr)
	}
	args = append(args, cfg.Args...)
	s.cmd = exec.Command(bin, args...)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	s.cmd.Env = raceenv.Environ()
	// The server dies with the test binary even if the test binary is killed.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		if !s.stopped {
			s.Stop()
		}
	})
	return s
}

// bindFailed reports whether the server's output says its listening address was taken.
func (s *server) bindFailed() bool {
	return (s.Port != 0 || s.MetricsAddr != "") && strings.Contains(strings.ToLower(s.out.String()), "address already in use")
}

// waitReady waits until the server accepts a connection (and serves metrics, if asked). It
// returns false, instead of failing the test, when the server exited because its port was
// taken and retry allows another attempt.
func (s *server) waitReady(retry bool) bool {
	s.t.Helper()
	network, addr := "unix", s.Sock
	if s.Sock == "" {
		network, addr = "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port))
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			// A server that may refuse can accept on its socket before it refuses: only
			// its greeting says it serves.
			if abortHandshake(c) || !s.mayRefuse {
				break
			}
		}
		select {
		case <-s.exited:
			s.stopped = true
			if retry && s.bindFailed() {
				return false
			}
			if s.mayRefuse {
				s.refused = true
				return true
			}
			s.t.Fatalf("%s %q exited before listening: %v\n%s", s.bin, s.cmd.Args[1:], s.waitErr, s.out)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s not accepting on %s after 30s: %v\n%s", s.bin, addr, err, s.out)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s.MetricsAddr != "" {
		for {
			c, err := net.DialTimeout("tcp", s.MetricsAddr, time.Second)
			if err == nil {
				c.Close()
				return true
			}
			if time.Now().After(deadline) {
				s.t.Fatalf("metrics endpoint %s not accepting after 30s: %v\n%s", s.MetricsAddr, err, s.out)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return true
}

// abortHandshake ends the readiness probe's connection the way a polite client does: it
// reads the greeting, then sends NBD_OPT_ABORT and waits for the server to answer or close.
// A probe that hung up at once would make both qnbd and qemu-nbd print "write failed: Unable
// to write to socket: Broken pipe" (measured on qemu-nbd 7.2), which tests that compare
// the server's stderr must not see. It reports whether the server sent its greeting.
func abortHandshake(c net.Conn) bool {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second)) // a bound on a hang
	var greeting [18]byte
	if _, err := io.ReadFull(c, greeting[:]); err != nil {
		return false
	}
	msg := binary.BigEndian.AppendUint32(nil, uint32(nbd.FlagCFixedNewstyle|nbd.FlagCNoZeroes))
	msg = binary.BigEndian.AppendUint64(msg, nbd.MagicIHaveOpt)
	msg = binary.BigEndian.AppendUint32(msg, uint32(nbd.OptAbort))
	msg = binary.BigEndian.AppendUint32(msg, 0)
	if _, err := c.Write(msg); err != nil {
		return true
	}
	io.Copy(io.Discard, c) // the ABORT reply, then the server's close
	return true
}

// URI is the NBD URI of export name on this server.
func (s *server) URI(name string) string {
	if s.Sock != "" {
		return "nbd+unix:///" + url.PathEscape(name) + "?socket=" + s.Sock
	}
	return fmt.Sprintf("nbd://127.0.0.1:%d/%s", s.Port, url.PathEscape(name))
}

// Output is what the server printed so far.
func (s *server) Output() string { return s.out.String() }

// Stop sends SIGTERM and requires a clean exit: status 0 within 30 s and no race report.
// qemu-nbd is only required to exit.
func (s *server) Stop() {
	s.t.Helper()
	s.stopped = true
	select {
	case <-s.exited:
		s.t.Errorf("%s exited before it was stopped: %v\n%s", s.bin, s.waitErr, s.out)
		return
	default:
	}
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		s.t.Errorf("SIGTERM %s: %v", s.bin, err)
	}
	s.waitExit(true)
}

// WaitExit waits for a server that exits by itself (OneShot) and requires status 0.
func (s *server) WaitExit() {
	s.t.Helper()
	s.stopped = true
	s.waitExit(true)
}

func (s *server) waitExit(check bool) {
	s.t.Helper()
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-s.exited
		s.t.Errorf("%s did not exit within 30s of SIGTERM\n%s", s.bin, s.out)
		return
	}
	if !check || (s.bin != qnbdBin && s.bin != qnbdRaceBin) {
		return
	}
	if s.waitErr != nil {
		s.t.Errorf("qnbd %q exited with %v, want status 0\n%s", s.cmd.Args[1:], s.waitErr, s.out)
	}
	s.checkRace()
}

// Kill sends SIGKILL and waits for the process; a race report is still a failure.
func (s *server) Kill() {
	s.t.Helper()
	s.stopped = true
	s.cmd.Process.Kill()
	<-s.exited
	s.checkRace()
}

func (s *server) checkRace() {
	s.t.Helper()
	if out := s.out.String(); strings.Contains(out, "WARNING: DATA RACE") {
		s.t.Errorf("race detector report from %s:\n%s", s.bin, out)
	}
}

// freePort returns a TCP port on 127.0.0.1, below the ephemeral range, that was free a
// moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	return loopport.Free(t)
}

// shortTempDir is a per-test directory with a short path: Unix socket paths are limited to
// 108 bytes and t.TempDir() embeds the test's (possibly long) name.
func shortTempDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "qe2e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
