package server

import (
	"net"
	"path/filepath"
	"syscall"
	"testing"
)

// sendBuffer reads SO_SNDBUF of a Unix socket.
func sendBuffer(t *testing.T, uc *net.UnixConn) int {
	t.Helper()
	rc, err := uc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var n int
	var serr error
	if err := rc.Control(func(fd uintptr) {
		n, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	}); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return n
}

// A Unix socket gets a larger send buffer than the system default (as large as
// net.core.wmem_max allows); other connections are left as they are.
func TestUnixSocketSendBufferRaised(t *testing.T) {
	ln, err := net.Listen("unix", filepath.Join(t.TempDir(), "s"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accept := func() *net.UnixConn {
		cl, err := net.Dial("unix", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		sv, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sv.Close() })
		return sv.(*net.UnixConn)
	}
	plain, tuned := accept(), accept()
	tuneSocket(tuned)
	if got, def := sendBuffer(t, tuned), sendBuffer(t, plain); got <= def {
		t.Fatalf("SO_SNDBUF %d after tuning, default %d", got, def)
	}
	a, b := net.Pipe() // not a socket: nothing to tune, nothing to fail
	defer a.Close()
	defer b.Close()
	tuneSocket(a)
}
