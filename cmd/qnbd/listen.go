// Listening sockets: systemd socket activation (LISTEN_PID/LISTEN_FDS, fd 3), a Unix socket
// (-k), or TCP (-b/-p, IPv4 or IPv6), and listeners inherited from a --fork parent.
package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

const (
	firstListenFD  = 3 // sd_listen_fds(3): SD_LISTEN_FDS_START
	defaultPort    = "10809"
	defaultBind    = "0.0.0.0"
	envForkFDs     = "QNBD_FORK_LISTEN_FDS" // listeners passed to a --fork child
	envForkReadyFD = "QNBD_FORK_READY_FD"
)

// activationFDs reports how many sockets systemd passed, following qemu's
// check_socket_activation: LISTEN_PID must be this process and LISTEN_FDS a positive count.
func activationFDs() (int, error) {
	pid, fds := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS")
	if pid == "" || fds == "" {
		return 0, nil
	}
	if p, err := strconv.Atoi(pid); err != nil || p != os.Getpid() {
		return 0, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad LISTEN_FDS '%s'", fds)
	}
	return n, nil
}

// listenSpec is where the server will listen.
type listenSpec struct {
	activation int    // number of inherited fds from systemd (0: none)
	unixPath   string // -k
	tcpAddr    string // host:port otherwise
}

// resolveListen checks the listening options as qemu-nbd does.
func resolveListen(cfg *config) (listenSpec, error) {
	n, err := activationFDs()
	if err != nil {
		return listenSpec{}, err
	}
	if n > 0 {
		switch {
		case cfg.socket != "":
			return listenSpec{}, usagef("Unix socket can't be set when using socket activation")
		case cfg.bind != "":
			return listenSpec{}, usagef("The interface can't be set when using socket activation")
		case cfg.port != "":
			return listenSpec{}, usagef("TCP port number can't be set when using socket activation")
		case n > 1:
			return listenSpec{}, usagef("qnbd does not support socket activation with LISTEN_FDS > 1")
		}
		return listenSpec{activation: n}, nil
	}
	if cfg.socket != "" {
		return listenSpec{unixPath: cfg.socket}, nil
	}
	host, port := cfg.bind, cfg.port
	if host == "" {
		host = defaultBind
	}
	if port == "" {
		port = defaultPort
	}
	return listenSpec{tcpAddr: net.JoinHostPort(host, port)}, nil
}

// listen opens the listeners of ls. A Unix socket path left by a previous run is replaced,
// as QEMU does; the caller removes it at exit.
func listen(ls listenSpec) ([]net.Listener, error) {
	if ls.activation > 0 {
		for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
			os.Unsetenv(v)
		}
		return inheritListeners(ls.activation)
	}
	if ls.unixPath != "" {
		if err := os.Remove(ls.unixPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("cannot replace '%s': %w", ls.unixPath, err)
		}
		ln, err := net.Listen("unix", ls.unixPath)
		if err != nil {
			return nil, err
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		return []net.Listener{ln}, nil
	}
	ln, err := net.Listen("tcp", ls.tcpAddr)
	if err != nil {
		return nil, err
	}
	return []net.Listener{ln}, nil
}

// inheritListeners wraps fds 3..3+n-1 as listeners.
func inheritListeners(n int) ([]net.Listener, error) {
	var lns []net.Listener
	for fd := firstListenFD; fd < firstListenFD+n; fd++ {
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "listen-fd-"+strconv.Itoa(fd))
		ln, err := net.FileListener(f)
		f.Close() // FileListener dups it
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("failed to use socket activation: fd %d: %w", fd, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// listenerFile returns a dup of a listener's socket, for passing to a --fork child.
func listenerFile(ln net.Listener) (*os.File, error) {
	switch l := ln.(type) {
	case *net.TCPListener:
		return l.File()
	case *net.UnixListener:
		return l.File()
	}
	return nil, fmt.Errorf("cannot pass a %T to a child", ln)
}
