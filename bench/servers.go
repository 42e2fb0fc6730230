// The servers under test: how to prepare their image and start them on a Unix socket.
package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// serverKind describes one NBD server.
type serverKind struct {
	name string
	// raw: the server is given a raw file rather than qcow2.
	raw bool
	// tls: the server takes part in the TLS rows.
	tls bool
	// argv builds the command line serving image on sock; with tlsDir != "" it serves over
	// TLS with the x509 credentials in tlsDir (QEMU's file names).
	argv func(image, sock, tlsDir string) []string
}

// servers lists the servers a run can measure; beforeBin, when given, is a second qnbd
// binary measured as "qnbd-before", so that one run compares a change with what preceded it.
func servers(qnbdBin, beforeBin string) []serverKind {
	qnbd := func(bin string) func(image, sock, tlsDir string) []string {
		return func(image, sock, tlsDir string) []string {
			// qnbd takes qemu-nbd's command line.
			return append([]string{bin, "-t", "-e", "8", "-f", "qcow2", "-k", sock}, append(qemuTLSArgs(tlsDir), image)...)
		}
	}
	kinds := []serverKind{{name: "qnbd", tls: true, argv: qnbd(qnbdBin)}}
	if beforeBin != "" {
		kinds = append(kinds, serverKind{name: "qnbd-before", tls: true, argv: qnbd(beforeBin)})
	}
	return append(kinds, []serverKind{
		{name: "qemu-nbd", tls: true, argv: func(image, sock, tlsDir string) []string {
			return append([]string{"qemu-nbd", "-t", "-e", "8", "-f", "qcow2", "--cache=writeback", "-k", sock}, append(qemuTLSArgs(tlsDir), image)...)
		}},
		{name: "nbdkit", raw: true, argv: func(image, sock, _ string) []string {
			return []string{"nbdkit", "-f", "--exit-with-parent", "-U", sock, "file", image}
		}},
	}...)
}

// qemuTLSArgs is qemu-nbd's spelling of "serve over TLS with the credentials in dir".
func qemuTLSArgs(dir string) []string {
	if dir == "" {
		return nil
	}
	return []string{"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + dir, "--tls-creds", "tls0"}
}

// runningServer is a started server process.
type runningServer struct {
	cmd    *exec.Cmd
	log    lockedBuffer
	exited chan error
}

// logText is what the server has written to stdout and stderr so far.
func (s *runningServer) logText() string { return s.log.String() }

// lockedBuffer collects a process's output, written by exec's copying goroutine while the
// bench may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// start runs argv and waits until sock accepts connections.
func start(ctx context.Context, argv []string, sock string) (*runningServer, error) {
	s := &runningServer{exited: make(chan error, 1)}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return s, nil
		}
		select {
		case err := <-s.exited:
			return nil, fmt.Errorf("%s exited before listening: %v: %s", argv[0], err, strings.TrimSpace(s.logText()))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("%s not listening on %s after 10s: %s", argv[0], sock, s.logText())
		}
	}
}

// stop sends SIGTERM, then SIGKILL after 10 s, and waits for the process.
func (s *runningServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// prepareImage creates the image a workload runs on in dir: a fresh qcow2 of size (made with
// qemu-img, so qnbd and qemu-nbd start from the same bytes) or a sparse raw file, with the
// first prefill bytes written (1 MiB fills) when prefill > 0.
func prepareImage(ctx context.Context, dir string, raw bool, size, prefill int64) (string, error) {
	format, name := "qcow2", "image.qcow2"
	if raw {
		format, name = "raw", "image.raw"
	}
	path := filepath.Join(dir, name)
	os.Remove(path)
	if err := runQuiet(ctx, "qemu-img", "create", "-q", "-f", format, path, fmt.Sprint(size)); err != nil {
		return "", err
	}
	if prefill > 0 {
		// One qemu-io write per GiB keeps its buffer small.
		var args []string
		for off := int64(0); off < prefill; off += 1 << 30 {
			n := min(1<<30, prefill-off)
			args = append(args, "-c", fmt.Sprintf("write -q -P 0x5a %d %d", off, n))
		}
		args = append([]string{"-f", format}, append(args, path)...)
		if err := runQuiet(ctx, "qemu-io", args...); err != nil {
			return "", err
		}
	}
	return path, nil
}

func runQuiet(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// execOutput runs a command and returns its combined output.
func execOutput(argv ...string) (string, error) {
	b, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	return string(b), err
}
