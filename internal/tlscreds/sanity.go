// QEMU's sanity checks of the server's own certificate and its CA, made at load time.
package tlscreds

import (
	"crypto/x509"
	"errors"
	"time"
)

// sanityCheck fails, in QEMU's words, when the server certificate or a CA certificate is
// outside its validity period, or when the server certificate does not chain to the CA.
func sanityCheck(certPath, caPath string, cas []*x509.Certificate, now time.Time) error {
	certs, err := readCerts(certPath)
	if err != nil || len(certs) == 0 {
		why := "Base64 unexpected header error."
		if err != nil {
			why = "ASN1 parser: Error in DER parsing."
		}
		return qemuError("Unable to import server certificate %s: %s", certPath, why)
	}
	leaf := certs[0]
	if err := checkTimes(leaf, "server", certPath, now); err != nil {
		return err
	}
	for _, ca := range cas {
		if err := checkTimes(ca, "CA", caPath, now); err != nil {
			return err
		}
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	if err != nil {
		why := "The certificate is not trusted"
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			why = "The certificate hasn't got a known issuer"
		}
		return qemuError("Our own certificate %s failed validation against %s: %s", certPath, caPath, why)
	}
	return nil
}

func checkTimes(c *x509.Certificate, role, path string, now time.Time) error {
	switch {
	case now.After(c.NotAfter):
		return qemuError("The %s certificate %s has expired", role, path)
	case now.Before(c.NotBefore):
		return qemuError("The %s certificate %s is not yet active", role, path)
	}
	return nil
}
