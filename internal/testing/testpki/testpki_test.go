package testpki

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestIssuedCertsVerifyOnlyAgainstTheirCA checks the chain and the validity bounds.
func TestIssuedCertsVerifyOnlyAgainstTheirCA(t *testing.T) {
	ca, other := NewCA(t, "a"), NewCA(t, "b")
	srv := ca.Server(t, "localhost")
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := srv.Cert.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.Pool()}); err != nil {
			t.Errorf("server cert for %s: %v", host, err)
		}
	}
	if _, err := srv.Cert.Verify(x509.VerifyOptions{Roots: other.Pool()}); err == nil {
		t.Error("server cert verified against another CA")
	}
	cli := ca.Client(t, "c")
	client := x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if _, err := cli.Cert.Verify(client); err != nil {
		t.Errorf("client cert: %v", err)
	}
	old := ca.ClientValid(t, "old", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	if _, err := old.Cert.Verify(client); err == nil {
		t.Error("expired client cert verified")
	}
}

// TestWrittenPEMLoads checks that the files load as a TLS key pair and the key is private.
func TestWrittenPEMLoads(t *testing.T) {
	dir := t.TempDir()
	p := NewCA(t, "a").Server(t, "localhost").WritePEM(t, dir, "server")
	if _, err := tls.LoadX509KeyPair(p.Cert, p.Key); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(dir, "server.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", st.Mode(), err)
	}
}
