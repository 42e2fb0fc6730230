// -L/--list: qnbd -L and qemu-nbd -L run side by side against the same servers (qemu-nbd's
// and qnbd's, one export and several, Unix socket and TCP) and on the same mistakes, with
// the same stdout, stderr and exit status required (docs/qemu-nbd-fidelity.md).
package e2e

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sameList runs qemu-nbd and qnbd with args (-L and the rest) and compares what they print
// and return; qnbd's program name is qemu-nbd's for the comparison.
func sameList(t *testing.T, args ...string) result {
	t.Helper()
	want := runCode(t, append([]string{"qemu-nbd"}, args...)...)
	got := runCode(t, append([]string{qnbdBin}, args...)...)
	got.Stderr = strings.ReplaceAll("\n"+got.Stderr, "\nqnbd: ", "\nqemu-nbd: ")[1:]
	if got != want {
		t.Errorf("%s: qnbd and qemu-nbd differ\nqnbd:     exit %d\n%s%s\nqemu-nbd: exit %d\n%s%s",
			strings.Join(args, " "), got.Code, got.Stdout, got.Stderr, want.Code, want.Stdout, want.Stderr)
	}
	return want
}

// TestListMatchesQemuNBD lists qemu-nbd and qnbd servers with both clients.
func TestListMatchesQemuNBD(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	raw := newRaw(t, dir, 1<<20)
	qcow := newQcow2(t, dir, "16M", "")
	servers := map[string]*server{
		"qemu-nbd-described": startQemuNBD(t, serverConfig{Args: []string{"-f", "raw", "-x", "disk one", "-D", "the first disk", "-A", raw}}),
		"qemu-nbd-ro-tcp":    startQemuNBD(t, serverConfig{TCP: true, Args: []string{"-r", "-f", "qcow2", qcow}}),
		"qnbd-described":     startQnbd(t, serverConfig{Args: []string{"-f", "raw", "-x", "disk one", "-D", "the first disk", "-A", raw}}),
		"qnbd-ro-tcp":        startQnbd(t, serverConfig{TCP: true, Args: []string{"-r", "-f", "qcow2", qcow}}),
		"qnbd-several": startQnbd(t, serverConfig{Args: []string{"-r", "-e", "0", "-f", "qcow2", qcow,
			"--export", "second=" + raw + ",format=raw,description=raw,, too", "--export", "third=" + qcow + ",readonly=on"}}),
	}
	for name, s := range servers {
		args := []string{"-L", "-k", s.Sock}
		if s.Sock == "" {
			args = []string{"-L", "-b", "127.0.0.1", "-p", strconv.Itoa(s.Port)}
		}
		r := sameList(t, args...)
		if r.Code != 0 || !strings.HasPrefix(r.Stdout, "exports available: ") {
			t.Errorf("%s: qemu-nbd -L failed: %d %s", name, r.Code, r.Stderr)
		}
	}
}

// TestListRefusalsMatchQemuNBD compares the failures of -L: nothing listening (Unix and
// TCP), an unresolvable name, and options list mode refuses.
func TestListRefusalsMatchQemuNBD(t *testing.T) {
	t.Parallel()
	dir := shortTempDir(t)
	for _, args := range [][]string{
		{"-L", "-k", filepath.Join(dir, "none.sock")},
		{"-L", "-b", "127.0.0.1", "-p", strconv.Itoa(freePort(t))},
		{"-L", "-b", "::1", "-p", strconv.Itoa(freePort(t))},
		{"-L", "-b", "nosuchhost.invalid"},
		{"-L", "disk.img"},
		{"-L", "-x", "name"},
		{"-L", "-f", "raw"},
		{"-L", "-A"},
		{"-L", "--cache=none"},
		{"-L", "--fork"},
	} {
		if r := sameList(t, args...); r.Code == 0 {
			t.Errorf("%v: exit 0", args)
		}
	}
}
