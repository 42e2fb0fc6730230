// CA and leaf certificates, and writing them as PEM.
package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Cert is a certificate with its private key.
type Cert struct {
	Cert *x509.Certificate
	DER  []byte
	Key  *ecdsa.PrivateKey
}

// CA is a self-signed certificate authority.
type CA struct{ Cert }

// NewCA makes a self-signed CA whose subject is CN=cn.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	tmpl := template(t, cn, time.Time{}, time.Time{})
	tmpl.IsCA = true
	tmpl.BasicConstraintsValid = true
	tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	key := newKey(t)
	return &CA{sign(t, tmpl, tmpl, key, key)}
}

// Server issues a server certificate for CN=cn with the SANs localhost, 127.0.0.1 and ::1.
func (ca *CA) Server(t testing.TB, cn string) Cert {
	t.Helper()
	tmpl := template(t, cn, time.Time{}, time.Time{})
	tmpl.DNSNames = []string{"localhost"}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	return ca.issue(t, tmpl)
}

// Client issues a client certificate for CN=cn.
func (ca *CA) Client(t testing.TB, cn string) Cert {
	t.Helper()
	return ca.ClientValid(t, cn, time.Time{}, time.Time{})
}

// ClientSubject issues a client certificate for the given subject (Go writes its attributes in
// the order C, ST, L, O, OU, CN), for tests whose authorisation rules name a whole DN.
func (ca *CA) ClientSubject(t testing.TB, subject pkix.Name) Cert {
	t.Helper()
	tmpl := template(t, subject.CommonName, time.Time{}, time.Time{})
	tmpl.Subject = subject
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return ca.issue(t, tmpl)
}

// ClientValid issues a client certificate for CN=cn valid from notBefore to notAfter (zero values
// take the defaults), for expired and not-yet-valid cases.
func (ca *CA) ClientValid(t testing.TB, cn string, notBefore, notAfter time.Time) Cert {
	t.Helper()
	tmpl := template(t, cn, notBefore, notAfter)
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	return ca.issue(t, tmpl)
}

func (ca *CA) issue(t testing.TB, tmpl *x509.Certificate) Cert {
	t.Helper()
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	return sign(t, tmpl, ca.Cert.Cert, newKey(t), ca.Key)
}

// Pool is a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert.Cert)
	return p
}

// TLS is the certificate as crypto/tls wants it.
func (c Cert) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.DER}, PrivateKey: c.Key, Leaf: c.Cert}
}

// WriteCert writes the certificate as PEM to path.
func (c Cert) WriteCert(t testing.TB, path string) {
	t.Helper()
	write(t, path, 0o644, &pem.Block{Type: "CERTIFICATE", Bytes: c.DER})
}

// WriteKey writes the private key as PKCS#8 PEM to path, readable by its owner only.
func (c Cert) WriteKey(t testing.TB, path string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(c.Key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, 0o600, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// Paths are the files WritePEM wrote.
type Paths struct{ Cert, Key string }

// WritePEM writes dir/name.crt and dir/name.key.
func (c Cert) WritePEM(t testing.TB, dir, name string) Paths {
	t.Helper()
	p := Paths{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key")}
	c.WriteCert(t, p.Cert)
	c.WriteKey(t, p.Key)
	return p
}

func write(t testing.TB, path string, mode os.FileMode, b *pem.Block) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(b), mode); err != nil {
		t.Fatal(err)
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func template(t testing.TB, cn string, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"qnbd tests"}},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
	}
}

func sign(t testing.TB, tmpl, parent *x509.Certificate, key, parentKey *ecdsa.PrivateKey) Cert {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return Cert{Cert: c, DER: der, Key: key}
}
