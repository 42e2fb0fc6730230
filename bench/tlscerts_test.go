package main

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

// TestTLSDirsHaveQEMUsNamesAndVerify checks the credential directories carry the file names
// qemu-nbd and libnbd look for, and that each leaf verifies against the CA for its role.
func TestTLSDirsHaveQEMUsNamesAndVerify(t *testing.T) {
	d, err := makeTLSDirs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dir, role string
		usage     x509.ExtKeyUsage
	}{{d.server, "server", x509.ExtKeyUsageServerAuth}, {d.client, "client", x509.ExtKeyUsageClientAuth}} {
		pair, err := tls.LoadX509KeyPair(filepath.Join(c.dir, c.role+"-cert.pem"), filepath.Join(c.dir, c.role+"-key.pem"))
		if err != nil {
			t.Fatalf("%s: %v", c.role, err)
		}
		caPEM, err := os.ReadFile(filepath.Join(c.dir, "ca-cert.pem"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			t.Fatalf("%s: ca-cert.pem holds no certificate", c.role)
		}
		leaf, err := x509.ParseCertificate(pair.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "localhost", KeyUsages: []x509.ExtKeyUsage{c.usage}}); err != nil {
			t.Errorf("%s certificate does not verify for its role: %v", c.role, err)
		}
		if fi, err := os.Stat(filepath.Join(c.dir, c.role+"-key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s key is not private to its owner: %v %v", c.role, fi.Mode(), err)
		}
	}
}

func TestCopyURI(t *testing.T) {
	if got, want := copyURI("/tmp/b/nbd.sock", ""), "nbd+unix:///?socket=%2Ftmp%2Fb%2Fnbd.sock"; got != want {
		t.Errorf("plain URI %q, want %q", got, want)
	}
	if got, want := copyURI("/s", "/c"), "nbds+unix:///?socket=%2Fs&tls-certificates=%2Fc"; got != want {
		t.Errorf("TLS URI %q, want %q", got, want)
	}
}
