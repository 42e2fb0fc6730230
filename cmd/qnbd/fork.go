// --fork: the parent opens the listening sockets, re-executes itself as a detached child
// that inherits them with a readiness pipe, and exits once the child reports that it serves
// (or with the child's status if it fails first), as qemu-nbd --fork does.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// readyByte is what the child writes on the readiness pipe when it is serving.
const readyByte = 'R'

// forkParent runs in the parent; it returns the parent's exit status.
func forkParent(cfg *config, args []string, stderr io.Writer) int {
	ls, err := resolveListen(cfg)
	if err != nil {
		return fail(stderr, err)
	}
	lns, err := listen(ls)
	if err != nil {
		return fail(stderr, fmt.Errorf("cannot listen: %w", err))
	}
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, ln := range lns {
		f, err := listenerFile(ln)
		if err != nil {
			return fail(stderr, err)
		}
		files = append(files, f)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fail(stderr, err)
	}
	defer r.Close()
	exe, err := os.Executable()
	if err != nil {
		w.Close()
		return fail(stderr, err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		w.Close()
		return fail(stderr, err)
	}
	defer null.Close()
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(),
		envForkFDs+"="+strconv.Itoa(len(files)),
		envForkReadyFD+"="+strconv.Itoa(firstListenFD+len(files)))
	cmd.ExtraFiles = append(append([]*os.File(nil), files...), w)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fail(stderr, fmt.Errorf("failed to fork: %w", err))
	}
	w.Close()
	var b [1]byte
	if n, _ := r.Read(b[:]); n == 1 && b[0] == readyByte {
		return 0
	}
	// The child ended (or closed the pipe) without becoming ready; it printed why.
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() > 0 {
		return ee.ExitCode()
	}
	return 1
}

// forkChild reports whether this process is a --fork child, and returns its inherited
// listeners and readiness pipe.
func forkChild() (bool, []net.Listener, *os.File, error) {
	nfds, readyFD := os.Getenv(envForkFDs), os.Getenv(envForkReadyFD)
	if nfds == "" {
		return false, nil, nil, nil
	}
	os.Unsetenv(envForkFDs)
	os.Unsetenv(envForkReadyFD)
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 1 {
		return true, nil, nil, fmt.Errorf("bad %s '%s'", envForkFDs, nfds)
	}
	rfd, err := strconv.Atoi(readyFD)
	if err != nil || rfd != firstListenFD+n {
		return true, nil, nil, fmt.Errorf("bad %s '%s'", envForkReadyFD, readyFD)
	}
	syscall.CloseOnExec(rfd)
	ready := os.NewFile(uintptr(rfd), "ready-pipe")
	lns, err := inheritListeners(n)
	if err != nil {
		ready.Close()
		return true, nil, nil, err
	}
	return true, lns, ready, nil
}

// detachStderr points the daemon's fd 2 at /dev/null once it has reported ready, as
// qemu-nbd's daemon does: until then its errors reach the caller through the inherited
// stderr; afterwards holding that stderr open would keep a caller that reads it (out=$(qnbd
// --fork ... 2>&1)) waiting for the daemon to exit.
func detachStderr() error {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	return unix.Dup3(int(null.Fd()), int(os.Stderr.Fd()), 0)
}
