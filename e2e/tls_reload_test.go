// SIGHUP with TLS (docs/tls.md, "Reloading"): new credentials and authz rules apply to new
// handshakes, open connections stay, and a set that fails to load keeps the previous one.
package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/e2e/libnbd"
)

// copyDir copies the regular files of src into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	must(t, os.MkdirAll(dst, 0o700))
	ents, err := os.ReadDir(src)
	must(t, err)
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600))
	}
}

// served reports whether nbdinfo with the certificates in dir reaches the export.
func served(t *testing.T, s *server, dir string) bool {
	t.Helper()
	return runCode(t, "nbdinfo", "--size", tlsURI(s, "", dir)).Code == 0
}

// hup sends SIGHUP and waits until the server has logged n reload lines in total.
func hup(t *testing.T, s *server, n int) {
	t.Helper()
	must(t, s.cmd.Process.Signal(syscall.SIGHUP))
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(s.Output(), "qnbd: SIGHUP: TLS credentials") < n {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged after SIGHUP:\n%s", s.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTLSReloadOnSIGHUP(t *testing.T) {
	t.Parallel()
	p1, p2 := newTestPKI(t), newTestPKI(t)
	root := shortTempDir(t)
	creds := filepath.Join(root, "creds")
	copyDir(t, p1.server, creds)
	acl := filepath.Join(root, "acl.json")
	writeACL := func(cn string) {
		must(t, os.WriteFile(acl, []byte(`{"policy":"deny","rules":[{"match":"C=GB,O=Example,CN=`+cn+`","policy":"allow"}]}`), 0o600))
	}
	writeACL("client1")
	img := newRaw(t, root, 1<<20)
	s := startQnbd(t, serverConfig{TCP: true, Args: []string{"--log-level=info",
		"--object", "tls-creds-x509,id=tls0,endpoint=server,dir=" + creds, "--tls-creds", "tls0",
		"--object", "authz-list-file,id=acl,filename=" + acl + ",refresh=off", "--tls-authz", "acl",
		"-f", "raw", "-e", "0", img}})

	// A connection made before the reload, kept open across it.
	h, err := libnbd.Create()
	must(t, err)
	defer h.Close()
	must(t, h.SetURIAllowLocalFile(true))
	must(t, h.ConnectURI(tlsURI(s, "", p1.good)))
	pattern := bytes.Repeat([]byte{0xa5}, 4096)
	must(t, h.Pwrite(pattern, 0, 0))

	if !served(t, s, p1.good) || served(t, s, p1.other) || served(t, s, p2.good) {
		t.Fatal("before the reload: only p1's client1 should be served")
	}

	// New CA and server certificate, and client2 allowed instead of client1.
	copyDir(t, p2.server, creds)
	writeACL("client2")
	hup(t, s, 1)
	if served(t, s, p1.good) || served(t, s, p2.good) || !served(t, s, p2.other) {
		t.Fatalf("after the reload: only p2's client2 should be served\n%s", s.Output())
	}
	got := make([]byte, len(pattern))
	must(t, h.Pread(got, 0, 0))
	if !bytes.Equal(got, pattern) {
		t.Fatal("the connection opened before the reload reads wrong data")
	}

	// A broken set is refused with one line; the set in force stays.
	must(t, os.WriteFile(filepath.Join(creds, "server-key.pem"), []byte("junk\n"), 0o600))
	hup(t, s, 2)
	if n := strings.Count(s.Output(), "TLS credentials not reloaded; keeping the previous ones"); n != 1 {
		t.Fatalf("%d failure lines, want 1:\n%s", n, s.Output())
	}
	if !served(t, s, p2.other) {
		t.Fatal("a failed reload dropped the credentials in force")
	}
	must(t, h.Pread(got, 0, 0))
	must(t, h.Shutdown(0))
}
