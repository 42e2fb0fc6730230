// x509 credentials for the TLS rows, made fresh for each run and never kept.
package main

import (
	"crypto"
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
	"time"
)

// tlsDirs are the two credential directories, in the file names QEMU and libnbd expect:
// server has ca-cert.pem, server-cert.pem and server-key.pem (qemu-nbd's tls-creds-x509
// dir=); client has ca-cert.pem, client-cert.pem and client-key.pem (libnbd's
// tls-certificates=).
type tlsDirs struct {
	server, client string
}

// makeTLSDirs creates a throwaway CA and a server and a client certificate signed by it under
// dir. The server certificate names localhost and the loopback addresses; the client one is
// there because qemu-nbd verifies the peer by default.
func makeTLSDirs(dir string) (tlsDirs, error) {
	d := tlsDirs{server: filepath.Join(dir, "server"), client: filepath.Join(dir, "client")}
	for _, p := range []string{d.server, d.client} {
		if err := os.MkdirAll(p, 0o700); err != nil {
			return d, err
		}
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return d, err
	}
	ca := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "qnbd bench CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return d, err
	}
	if ca, err = x509.ParseCertificate(caDER); err != nil {
		return d, err
	}
	leaves := []struct {
		dir, name string
		usage     x509.ExtKeyUsage
	}{
		{d.server, "server", x509.ExtKeyUsageServerAuth},
		{d.client, "client", x509.ExtKeyUsageClientAuth},
	}
	for i, l := range leaves {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return d, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{Organization: []string{"qnbd bench"}, CommonName: "localhost"},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{l.usage},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return d, err
		}
		if err := writePEM(filepath.Join(l.dir, l.name+"-cert.pem"), "CERTIFICATE", der); err != nil {
			return d, err
		}
		if err := writeKey(filepath.Join(l.dir, l.name+"-key.pem"), key); err != nil {
			return d, err
		}
		if err := writePEM(filepath.Join(l.dir, "ca-cert.pem"), "CERTIFICATE", caDER); err != nil {
			return d, err
		}
	}
	return d, nil
}

func writeKey(path string, key crypto.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
