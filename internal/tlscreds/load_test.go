package tlscreds

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/qemuobj"
	"github.com/qnbd/qnbd/server"
)

type ca struct {
	t    *testing.T
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var serial int64 = 100

func (a *ca) issue(tmpl *x509.Certificate, nb, na time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	a.t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		a.t.Fatal(err)
	}
	serial++
	tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), nb, na
	parent, signer := tmpl, k
	if a.cert != nil {
		parent, signer = a.cert, a.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, signer)
	if err != nil {
		a.t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, k
}

func newCA(t *testing.T) *ca {
	a := &ca{t: t}
	a.cert, a.key = a.issue(&x509.Certificate{Subject: pkix.Name{CommonName: "CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	return a
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func keyDER(t *testing.T, k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// serverDir writes a complete credentials directory whose server certificate is valid over
// [nb, na].
func (a *ca) serverDir(dir string, nb, na time.Time) string {
	os.MkdirAll(dir, 0o700)
	writePEM(a.t, filepath.Join(dir, fileCA), "CERTIFICATE", a.cert.Raw)
	c, k := a.issue(&x509.Certificate{Subject: pkix.Name{CommonName: "localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, nb, na)
	writePEM(a.t, filepath.Join(dir, fileCert), "CERTIFICATE", c.Raw)
	writePEM(a.t, filepath.Join(dir, fileKey), "PRIVATE KEY", keyDER(a.t, k))
	return dir
}

func spec(t *testing.T, arg string) *Spec {
	t.Helper()
	o, err := qemuobj.Parse(arg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := SpecFromObject(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Every message below was measured with qemu-nbd 7.2 on the same damage.
func TestLoadFailuresReadAsQemu(t *testing.T) {
	a, other := newCA(t), newCA(t)
	now := time.Now()
	root := t.TempDir()
	for _, tc := range []struct {
		name   string
		damage func(dir string)
		msg    string
	}{
		{"no ca-cert", func(d string) { os.Remove(filepath.Join(d, fileCA)) },
			"Unable to access credentials D/ca-cert.pem: No such file or directory"},
		{"no server-cert", func(d string) { os.Remove(filepath.Join(d, fileCert)) },
			"Unable to access credentials D/server-cert.pem: No such file or directory"},
		{"no server-key", func(d string) { os.Remove(filepath.Join(d, fileKey)) },
			"Unable to access credentials D/server-key.pem: No such file or directory"},
		{"junk ca-cert", func(d string) { os.WriteFile(filepath.Join(d, fileCA), []byte("junk\n"), 0o600) },
			"Unable to import CA certificate list D/ca-cert.pem"},
		{"empty ca-cert", func(d string) { os.WriteFile(filepath.Join(d, fileCA), nil, 0o600) },
			"Unable to import CA certificate list D/ca-cert.pem"},
		{"junk server-cert", func(d string) { os.WriteFile(filepath.Join(d, fileCert), []byte("junk\n"), 0o600) },
			"Unable to import server certificate D/server-cert.pem: Base64 unexpected header error."},
		{"junk server-key", func(d string) { os.WriteFile(filepath.Join(d, fileKey), []byte("junk\n"), 0o600) },
			"Cannot load certificate 'D/server-cert.pem' & key 'D/server-key.pem': The requested data were not available."},
		{"junk ca-crl", func(d string) { os.WriteFile(filepath.Join(d, fileCRL), []byte("junk\n"), 0o600) },
			"Cannot load CRL 'D/ca-crl.pem': Base64 decoding error."},
		{"key mismatch", func(d string) {
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			writePEM(t, filepath.Join(d, fileKey), "PRIVATE KEY", keyDER(t, k))
		}, "Cannot load certificate 'D/server-cert.pem' & key 'D/server-key.pem': The certificate and the given key do not match."},
		{"expired server cert", func(d string) { a.serverDir(d, now.Add(-2*time.Hour), now.Add(-time.Hour)) },
			"The server certificate D/server-cert.pem has expired"},
		{"future server cert", func(d string) { a.serverDir(d, now.Add(time.Hour), now.Add(2*time.Hour)) },
			"The server certificate D/server-cert.pem is not yet active"},
		{"server cert from another CA", func(d string) {
			other.serverDir(d, now.Add(-time.Hour), now.Add(time.Hour))
			writePEM(t, filepath.Join(d, fileCA), "CERTIFICATE", a.cert.Raw)
		}, "Our own certificate D/server-cert.pem failed validation against D/ca-cert.pem: The certificate hasn't got a known issuer"},
	} {
		d := a.serverDir(filepath.Join(root, strings.ReplaceAll(tc.name, " ", "-")), now.Add(-time.Hour), now.Add(time.Hour))
		tc.damage(d)
		_, err := Load(spec(t, "tls-creds-x509,id=t,endpoint=server,dir="+d), now)
		if want := strings.ReplaceAll(tc.msg, "D/", d+"/"); err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", tc.name, err, want)
		}
	}
	_, err := Load(spec(t, "tls-creds-x509,id=t,endpoint=server,dir=/nonexistent"), now)
	if err == nil || err.Error() != "Unable to access credentials /nonexistent/ca-cert.pem: No such file or directory" {
		t.Errorf("missing dir: %v", err)
	}
	// sanity-check=off lets an expired server certificate through, as in QEMU.
	d := a.serverDir(filepath.Join(root, "expired-nocheck"), now.Add(-2*time.Hour), now.Add(-time.Hour))
	if _, err := Load(spec(t, "tls-creds-x509,id=t,endpoint=server,sanity-check=off,dir="+d), now); err != nil {
		t.Errorf("sanity-check=off: %v", err)
	}
}

func TestSpecRefusalsAndDefaults(t *testing.T) {
	for arg, want := range map[string]string{
		"tls-creds-x509,id=t,endpoint=server":                       "Missing 'dir' property value",
		"tls-creds-x509,id=t,endpoint=server,dir=d,priority=NORMAL": "priority=",
		"tls-creds-x509,id=t,endpoint=server,dir=d,passwordid=s":    "passwordid=",
		"tls-creds-x509,id=t,endpoint=server,dir=d,bogus=1":         "Parameter 'bogus' is unexpected",
		"tls-creds-x509,id=t,endpoint=sideways,dir=d":               "Parameter 'endpoint' does not accept value 'sideways'",
		"tls-creds-x509,id=t,dir=d,verify-peer=maybe":               "Parameter 'verify-peer' expects 'on' or 'off'",
	} {
		o, err := qemuobj.Parse(arg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := SpecFromObject(o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", arg, err, want)
		}
	}
	s := spec(t, "tls-creds-x509,id=t,dir=d")
	if s.Server || !s.VerifyPeer || !s.SanityCheck {
		t.Errorf("defaults: %+v (QEMU: endpoint=client, verify-peer=on, sanity-check=on)", s)
	}
}

// handshake runs a TLS handshake between cfg and a client presenting cert.
func handshake(t *testing.T, cfg *tls.Config, pool *x509.CertPool, cert *tls.Certificate) error {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	cc := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1",
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }}
	go func() {
		c := tls.Client(b, cc)
		if c.Handshake() == nil {
			c.Read(make([]byte, 1)) // TLS 1.3: the server's verdict on our certificate
		}
		b.Close()
	}()
	return tls.Server(a, cfg).Handshake()
}

func TestCRLRevokesAndReloadKeepsOldSetOnFailure(t *testing.T) {
	a := newCA(t)
	now := time.Now()
	dir := a.serverDir(t.TempDir(), now.Add(-time.Hour), now.Add(time.Hour))
	client := func() (*x509.Certificate, *tls.Certificate) {
		c, k := a.issue(&x509.Certificate{Subject: pkix.Name{CommonName: "c"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, now.Add(-time.Hour), now.Add(time.Hour))
		return c, &tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k}
	}
	revoked, revokedPair := client()
	_, goodPair := client()
	pool := x509.NewCertPool()
	pool.AddCert(a.cert)

	st, err := NewStore(spec(t, "tls-creds-x509,id=t,endpoint=server,dir="+dir))
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, st.Config(), pool, revokedPair); err != nil {
		t.Fatalf("before the CRL: %v", err)
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
		ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: revoked.SerialNumber, RevocationTime: now}}},
		a.cert, a.key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, fileCRL), "X509 CRL", crl)
	if err := st.Reload(); err != nil {
		t.Fatal(err)
	}
	err = handshake(t, st.Config(), pool, revokedPair)
	if !errors.Is(err, server.ErrCertificateRevoked) {
		t.Fatalf("revoked certificate: %v", err)
	}
	if err := handshake(t, st.Config(), pool, goodPair); err != nil {
		t.Fatalf("unrevoked certificate: %v", err)
	}
	// A broken set is not loaded; the one in force stays.
	before := st.Config()
	os.WriteFile(filepath.Join(dir, fileKey), []byte("junk\n"), 0o600)
	if err := st.Reload(); err == nil || !strings.Contains(err.Error(), "The requested data were not available.") {
		t.Fatalf("reload of a broken set: %v", err)
	}
	if st.Config() != before {
		t.Fatal("a failed reload replaced the credentials")
	}
	if cfg := st.Config(); cfg.MinVersion != tls.VersionTLS12 || cfg.ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatalf("config: min %#x, client auth %v", cfg.MinVersion, cfg.ClientAuth)
	}
}
