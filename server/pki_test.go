// A certificate authority made at test time for the TLS tests: a CA, a server certificate
// for 127.0.0.1, and client certificates with chosen subjects and validity.
package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

type testCA struct {
	t    testing.TB
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

var testSerial atomic.Int64

func newTestCA(t testing.TB, cn string) *testCA {
	t.Helper()
	tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	ca := &testCA{t: t}
	ca.cert, ca.key = ca.issue(tmpl, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	ca.pool = x509.NewCertPool()
	ca.pool.AddCert(ca.cert)
	return ca
}

// issue signs tmpl with ca (self-signed when ca.cert is nil) for [nb, na].
func (ca *testCA) issue(tmpl *x509.Certificate, nb, na time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
	ca.t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(testSerial.Add(1))
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

func (ca *testCA) pair(c *x509.Certificate, k *ecdsa.PrivateKey) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k, Leaf: c}
}

func (ca *testCA) server() tls.Certificate {
	c, k := ca.issue(&x509.Certificate{Subject: pkix.Name{CommonName: "localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	return ca.pair(c, k)
}

// client issues a client certificate for CN=cn valid over [nb, na].
func (ca *testCA) client(cn string, nb, na time.Time) tls.Certificate {
	c, k := ca.issue(&x509.Certificate{Subject: pkix.Name{Country: []string{"GB"}, CommonName: cn},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}},
		nb, na)
	return ca.pair(c, k)
}

// serverTLS is the server side as qnbd configures it: TLS 1.2 and up, client certificates
// required and verified against ca.
func (ca *testCA) serverTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{ca.server()},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: ca.pool}
}

// clientTLS trusts ca and presents cert (none when nil). It always presents the certificate,
// even one the server's CA list does not name, as GnuTLS clients do.
func (ca *testCA) clientTLS(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: ca.pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return cfg
}
