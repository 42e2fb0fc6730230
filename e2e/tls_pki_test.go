// Certificates made at test time for the TLS tests (Go's crypto/x509; nothing committed):
// a server directory laid out as qemu-nbd's tls-creds-x509 wants it and client directories
// laid out as libnbd's tls-certificates and qemu's endpoint=client want them.
package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// pkiCA is a certificate authority.
type pkiCA struct {
	t    *testing.T
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var pkiSerial atomic.Int64

func newPKICA(t *testing.T, cn string) *pkiCA {
	t.Helper()
	ca := &pkiCA{t: t}
	now := time.Now()
	ca.cert, ca.key = ca.sign(&x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign},
		now.Add(-time.Hour), now.Add(24*time.Hour))
	return ca
}

// sign issues tmpl for [nb, na], self-signed while ca has no certificate yet.
func (ca *pkiCA) sign(tmpl *x509.Certificate, nb, na time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	ca.t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(1000 + pkiSerial.Add(1))
	tmpl.NotBefore, tmpl.NotAfter = nb, na
	parent, signer := tmpl, k
	if ca.cert != nil {
		parent, signer = ca.cert, ca.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &k.PublicKey, signer)
	if err != nil {
		ca.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		ca.t.Fatal(err)
	}
	return c, k
}

// writePEM writes one PEM block to path (mode 0600).
func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (ca *pkiCA) writeLeaf(dir, prefix string, c *x509.Certificate, k *ecdsa.PrivateKey) {
	ca.t.Helper()
	writePEM(ca.t, filepath.Join(dir, prefix+"-cert.pem"), "CERTIFICATE", c.Raw)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		ca.t.Fatal(err)
	}
	writePEM(ca.t, filepath.Join(dir, prefix+"-key.pem"), "PRIVATE KEY", der)
}

// serverDir makes a tls-creds-x509 directory: ca-cert.pem (this CA), server-cert.pem for
// localhost/127.0.0.1/::1, server-key.pem.
func (ca *pkiCA) serverDir(dir string) string {
	ca.t.Helper()
	must(ca.t, os.MkdirAll(dir, 0o700))
	writePEM(ca.t, filepath.Join(dir, "ca-cert.pem"), "CERTIFICATE", ca.cert.Raw)
	now := time.Now()
	c, k := ca.sign(&x509.Certificate{Subject: pkix.Name{Organization: []string{"qnbd e2e"}, CommonName: "localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSNames: []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}}, now.Add(-time.Hour), now.Add(24*time.Hour))
	ca.writeLeaf(dir, "server", c, k)
	return dir
}

// clientDir makes a client directory: ca-cert.pem is trust (the CA that signed the server),
// client-cert.pem/client-key.pem are issued by ca for C=GB,O=Example,CN=cn over [nb, na].
func (ca *pkiCA) clientDir(dir string, trust *pkiCA, cn string, nb, na time.Time) string {
	ca.t.Helper()
	must(ca.t, os.MkdirAll(dir, 0o700))
	writePEM(ca.t, filepath.Join(dir, "ca-cert.pem"), "CERTIFICATE", trust.cert.Raw)
	c, k := ca.sign(&x509.Certificate{
		Subject:  pkix.Name{Country: []string{"GB"}, Organization: []string{"Example"}, CommonName: cn},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		nb, na)
	ca.writeLeaf(dir, "client", c, k)
	return dir
}

// testPKI is the set of directories the TLS tests use.
type testPKI struct {
	ca, evil *pkiCA
	server   string // tls-creds-x509 dir
	good     string // CN=client1, valid
	other    string // CN=client2, valid (the authz rules deny it)
	untrust  string // CN=client1 from another CA
	expired  string // CN=client1, expired an hour ago
	future   string // CN=client1, valid from an hour from now
	revoked  string // CN=client1, valid, listed in the server's ca-crl.pem
	distrust string // CN=client1, valid, but trusting another CA than the server's
}

// goodDN is the DN of the good client as GnuTLS (and so qemu-nbd) renders it.
const goodDN = "C=GB,O=Example,CN=client1"

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	root := shortTempDir(t)
	p := &testPKI{ca: newPKICA(t, "qnbd e2e CA"), evil: newPKICA(t, "untrusted CA")}
	now := time.Now()
	valid := func(dir, cn string, ca *pkiCA) string {
		return ca.clientDir(filepath.Join(root, dir), p.ca, cn, now.Add(-time.Hour), now.Add(24*time.Hour))
	}
	p.server = p.ca.serverDir(filepath.Join(root, "server"))
	p.good = valid("good", "client1", p.ca)
	p.other = valid("other", "client2", p.ca)
	p.untrust = valid("untrust", "client1", p.evil)
	p.expired = p.ca.clientDir(filepath.Join(root, "expired"), p.ca, "client1", now.Add(-2*time.Hour), now.Add(-time.Hour))
	p.future = p.ca.clientDir(filepath.Join(root, "future"), p.ca, "client1", now.Add(time.Hour), now.Add(2*time.Hour))
	p.revoked = valid("revoked", "client1", p.ca)
	p.ca.revoke(p.server, filepath.Join(p.revoked, "client-cert.pem"))
	p.distrust = p.ca.clientDir(filepath.Join(root, "distrust"), p.evil, "client1", now.Add(-time.Hour), now.Add(24*time.Hour))
	return p
}

// revoke writes dir/ca-crl.pem, signed by ca, listing the certificate in certFile.
func (ca *pkiCA) revoke(dir, certFile string) {
	ca.t.Helper()
	b, err := os.ReadFile(certFile)
	must(ca.t, err)
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	must(ca.t, err)
	now := time.Now()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
		ThisUpdate: now.Add(-time.Hour), NextUpdate: now.Add(24 * time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: c.SerialNumber, RevocationTime: now.Add(-time.Minute)}}},
		ca.cert, ca.key)
	must(ca.t, err)
	writePEM(ca.t, filepath.Join(dir, "ca-crl.pem"), "X509 CRL", der)
}
