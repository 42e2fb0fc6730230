package authz

import (
	"bytes"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// qemuNBD is a qemu-nbd 7.2 serving over TLS on a Unix socket with an authorizer that
// denies everyone, so that every client's DN ends up on its stderr.
type qemuNBD struct {
	cmd    *exec.Cmd
	socket string
	stderr string
}

func startQemuNBD(t *testing.T, p *testPKI) *qemuNBD {
	t.Helper()
	return startQemuNBDWith(t, p, "authz-simple,id=a,identity=NOTHIS")
}

// startQemuNBDWith serves with authzObject (whose id must be "a") as the TLS authorizer.
func startQemuNBDWith(t *testing.T, p *testPKI, authzObject string) *qemuNBD {
	t.Helper()
	dir := t.TempDir()
	srv := filepath.Join(dir, "server")
	p.writeDir(t, srv, "server", p.issue(t, rawName(t, rdn1(oidCN, tUTF8, "localhost")), true))
	img := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	q := &qemuNBD{socket: filepath.Join(dir, "nbd.sock"), stderr: filepath.Join(dir, "stderr")}
	errf, err := os.Create(q.stderr)
	if err != nil {
		t.Fatal(err)
	}
	defer errf.Close()
	q.cmd = exec.Command("qemu-nbd",
		"--object", "tls-creds-x509,id=t,endpoint=server,dir="+srv,
		"--object", authzObject,
		"--tls-creds", "t", "--tls-authz", "a",
		"-t", "-k", q.socket, "-r", "-f", "raw", img)
	q.cmd.Stderr = errf
	if err := q.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = q.cmd.Process.Kill()
		_ = q.cmd.Wait()
	})
	waitFor(t, "qemu-nbd's socket", func() bool {
		_, err := os.Stat(q.socket)
		return err == nil
	})
	return q
}

// waitFor polls cond until it holds, failing the test after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connect runs nbdinfo as the client holding cert and reports whether it got in.
func (q *qemuNBD) connect(t *testing.T, p *testPKI, cert *x509.Certificate) bool {
	t.Helper()
	dir := t.TempDir()
	p.writeDir(t, dir, "client", cert)
	uri := "nbds+unix:///?socket=" + q.socket + "&tls-certificates=" + dir
	return tool(t, "nbdinfo", "--size", uri).Run() == nil
}

// refusal connects with nbdinfo as the client holding cert and returns the n-th line
// (from 0) qemu-nbd printed about a refused client, without its "qemu-nbd: option
// negotiation failed: " prefix.
func (q *qemuNBD) refusal(t *testing.T, p *testPKI, cert *x509.Certificate, n int) string {
	t.Helper()
	if q.connect(t, p, cert) {
		t.Fatalf("nbdinfo was let in")
	}
	const prefix = "qemu-nbd: option negotiation failed: "
	var lines []string
	waitFor(t, "qemu-nbd's refusal line", func() bool {
		b, _ := os.ReadFile(q.stderr)
		lines = nil
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, prefix) {
				lines = append(lines, strings.TrimPrefix(l, prefix))
			}
		}
		return len(lines) > n
	})
	return lines[n]
}

// TestDNIsWhatQemuNBDReports connects to qemu-nbd 7.2 with client certificates of several
// subjects and checks Check's refusal, and so DN, against the line qemu-nbd prints ("TLS
// x509 authz check for DN is denied"), and for a subject GnuTLS cannot render, against its
// "Cannot get client distinguished name" line.
func TestDNIsWhatQemuNBDReports(t *testing.T) {
	p := newTestPKI(t)
	q := startQemuNBD(t, p)
	denyAll := &Simple{Identity: "NOTHIS"}
	pick := map[string]bool{
		"usual order": true, "reversed order kept": true, "multi-valued RDN": true,
		"repeated attribute in separate RDNs": true, "specials escaped anywhere": true,
		"leading and trailing spaces": true, "UTF-8 as is": true,
		"unknown OIDs as hex of the DER": true, "other DirectoryString types": true,
		"non-printable teletex as escaped hex of the content": true,
	}
	var certs []*x509.Certificate
	for _, c := range subjectCases() {
		if pick[c.name] {
			delete(pick, c.name)
			certs = append(certs, p.issue(t, rawName(t, c.rdns...), false))
		}
	}
	if len(pick) != 0 {
		t.Fatalf("cases not in the table: %v", pick)
	}
	certs = append(certs, p.issue(t, rawName(t, unrenderableSubjects()["empty UTF8String CN"]...), false))
	for n, cert := range certs {
		got := q.refusal(t, p, cert, n)
		if want := errString(Check(denyAll, cert)); got != want {
			t.Errorf("subject %x:\nqemu-nbd %q\n     ours %q", cert.RawSubject, got, want)
		}
	}
	if b, _ := os.ReadFile(q.stderr); bytes.Contains(b, []byte("NOTHIS")) {
		t.Errorf("qemu-nbd printed its own identity, not the client's:\n%s", b)
	}
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}
