package authz

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testPKI is a CA made at test time, and the one key every certificate it signs shares
// (the tests are about names, not keys).
type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	leaf   *ecdsa.PrivateKey
	serial int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	caKey := mustKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "qnbd authz test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{ca: ca, caKey: caKey, leaf: mustKey(t), serial: 1}
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// issue signs a certificate whose subject is the DER Name rawSubject, usable as a TLS
// client certificate, or as a server certificate for localhost with server set.
func (p *testPKI) issue(t *testing.T, rawSubject []byte, server bool) *x509.Certificate {
	t.Helper()
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(p.serial),
		RawSubject:            rawSubject,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &p.leaf.PublicKey, p.caKey)
	if err != nil {
		t.Fatalf("signing a certificate for subject %x: %v", rawSubject, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("crypto/x509 refuses subject %x: %v", rawSubject, err)
	}
	return c
}

// writeDir writes QEMU's credential file names for cert into dir: prefix is "client" or
// "server".
func (p *testPKI) writeDir(t *testing.T, dir, prefix string, cert *x509.Certificate) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(p.leaf)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "ca-cert.pem"), "CERTIFICATE", p.ca.Raw)
	writePEM(t, filepath.Join(dir, prefix+"-cert.pem"), "CERTIFICATE", cert.Raw)
	writePEM(t, filepath.Join(dir, prefix+"-key.pem"), "PRIVATE KEY", keyDER)
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// DER building blocks for subjects crypto/x509 would never write itself: any string
// type for any attribute, any order inside a multi-valued RDN.

// av is one attribute of a test subject: its OID, the string tag its value carries, and
// the value's content bytes.
type av struct {
	oid string
	tag int
	val string
}

func tlv(tag byte, content []byte) []byte {
	n := len(content)
	var hdr []byte
	switch {
	case n < 0x80:
		hdr = []byte{tag, byte(n)}
	case n < 0x100:
		hdr = []byte{tag, 0x81, byte(n)}
	default:
		hdr = []byte{tag, 0x82, byte(n >> 8), byte(n)}
	}
	return append(hdr, content...)
}

func oidDER(t *testing.T, dotted string) []byte {
	t.Helper()
	var oid asn1.ObjectIdentifier
	var n int
	for i := 0; i <= len(dotted); i++ {
		if i == len(dotted) || dotted[i] == '.' {
			oid = append(oid, n)
			n = 0
			continue
		}
		n = n*10 + int(dotted[i]-'0')
	}
	der, err := asn1.Marshal(oid)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// rawName encodes rdns (each a multi-valued RDN, in the order given, unsorted) as a DER
// Name.
func rawName(t *testing.T, rdns ...[]av) []byte {
	t.Helper()
	var seq []byte
	for _, rdn := range rdns {
		var set []byte
		for _, a := range rdn {
			atv := append(oidDER(t, a.oid), tlv(byte(a.tag), []byte(a.val))...)
			set = append(set, tlv(0x30, atv)...)
		}
		seq = append(seq, tlv(0x31, set)...)
	}
	return tlv(0x30, seq)
}

// rdn1 is a single-valued RDN.
func rdn1(oid string, tag int, val string) []av { return []av{{oid, tag, val}} }

// OIDs and tags the subject tables use.
const (
	oidC      = "2.5.4.6"
	oidO      = "2.5.4.10"
	oidOU     = "2.5.4.11"
	oidCN     = "2.5.4.3"
	oidL      = "2.5.4.7"
	oidST     = "2.5.4.8"
	oidEmail  = "1.2.840.113549.1.9.1"
	oidSerial = "2.5.4.5"
	oidDC     = "0.9.2342.19200300.100.1.25"
	oidUID    = "0.9.2342.19200300.100.1.1"

	tUTF8      = asn1.TagUTF8String
	tPrintable = asn1.TagPrintableString
	tIA5       = asn1.TagIA5String
	tT61       = asn1.TagT61String
	tBMP       = asn1.TagBMPString
	tNumeric   = asn1.TagNumericString
)
