// Load: the credential files, QEMU's sanity checks, and the tls.Config built from them.
package tlscreds

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// QEMU's file names inside dir.
const (
	fileCA   = "ca-cert.pem"
	fileCRL  = "ca-crl.pem"
	fileCert = "server-cert.pem"
	fileKey  = "server-key.pem"
)

// Creds is one loaded set of server credentials.
type Creds struct {
	Config *tls.Config
	crl    *crl // nil without ca-crl.pem
}

// Load reads the credentials of a server endpoint, as QEMU loads tls-creds-x509: every file
// must be readable (ca-crl.pem only if present), then the sanity checks, then the key pair
// and the CRL. now is the time the certificates are checked against.
func Load(s *Spec, now time.Time) (*Creds, error) {
	path := func(name string) string { return filepath.Join(s.Dir, name) }
	for _, name := range []string{fileCA, fileCRL, fileCert, fileKey} {
		if err := access(path(name)); err != nil {
			if name == fileCRL && errors.Is(err, os.ErrNotExist) {
				continue // optional
			}
			return nil, qemuError("Unable to access credentials %s: %s", path(name), strerror(err))
		}
	}
	cas, err := readCerts(path(fileCA))
	if err != nil || len(cas) == 0 {
		return nil, qemuError("Unable to import CA certificate list %s", path(fileCA))
	}
	if s.SanityCheck {
		if err := sanityCheck(path(fileCert), path(fileCA), cas, now); err != nil {
			return nil, err
		}
	}
	kp, err := loadKeyPair(path(fileCert), path(fileKey))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	creds := &Creds{}
	if _, err := os.Stat(path(fileCRL)); err == nil {
		if creds.crl, err = loadCRL(path(fileCRL), cas); err != nil {
			return nil, err
		}
	}
	creds.Config = &tls.Config{
		MinVersion:   tls.VersionTLS12, // Go picks 1.3 whenever the client offers it
		Certificates: []tls.Certificate{kp},
	}
	if s.VerifyPeer {
		creds.Config.ClientAuth = tls.RequireAndVerifyClientCert
		creds.Config.ClientCAs = pool
		if creds.crl != nil {
			creds.Config.VerifyConnection = creds.crl.verify
		}
	}
	return creds, nil
}

// access checks that path can be opened for reading (QEMU uses access(R_OK)).
func access(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return f.Close()
}

// strerror is the C library's text for the errno behind err.
func strerror(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		s := errno.Error()
		return string(s[0]-'a'+'A') + s[1:]
	}
	return err.Error()
}

// readCerts parses every CERTIFICATE block of a PEM file.
func readCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out, nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// loadKeyPair loads the server's certificate chain and key with GnuTLS's wording for the
// usual failures.
func loadKeyPair(certPath, keyPath string) (tls.Certificate, error) {
	fail := func(why string) (tls.Certificate, error) {
		return tls.Certificate{}, qemuError("Cannot load certificate '%s' & key '%s': %s", certPath, keyPath, why)
	}
	certs, err := readCerts(certPath)
	if err != nil || len(certs) == 0 {
		return fail("Base64 unexpected header error.")
	}
	kp, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		if keyb, rerr := os.ReadFile(keyPath); rerr == nil {
			if blk, _ := pem.Decode(keyb); blk != nil && privateKeyParses(blk.Bytes) {
				return fail("The certificate and the given key do not match.")
			}
		}
		return fail("The requested data were not available.")
	}
	return kp, nil
}

func privateKeyParses(der []byte) bool {
	if _, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		return true
	}
	if _, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return true
	}
	_, err := x509.ParseECPrivateKey(der)
	return err == nil
}

// CheckClient makes the checks QEMU makes when it creates a client endpoint object, which
// qnbd never uses (--tls-creds refuses it) but which qemu-nbd still loads: ca-cert.pem must
// be readable and hold a certificate, and ca-crl.pem, if present, must be readable.
func CheckClient(s *Spec) error {
	for _, name := range []string{fileCA, fileCRL} {
		p := filepath.Join(s.Dir, name)
		if err := access(p); err != nil {
			if name == fileCRL && errors.Is(err, os.ErrNotExist) {
				continue
			}
			return qemuError("Unable to access credentials %s: %s", p, strerror(err))
		}
	}
	p := filepath.Join(s.Dir, fileCA)
	if cas, err := readCerts(p); err != nil || len(cas) == 0 {
		return qemuError("Unable to import CA certificate list %s", p)
	}
	return nil
}
