// The optional CRL: client certificates whose serial it lists are refused.
package tlscreds

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"

	"github.com/qnbd/qnbd/server"
)

// crl is the set of revoked serials per issuer (the issuer's raw subject).
type crl struct {
	revoked map[string]map[string]bool
}

// loadCRL reads every X509 CRL block of path; each must be signed by one of cas.
func loadCRL(path string, cas []*x509.Certificate) (*crl, error) {
	fail := func(why string) (*crl, error) {
		return nil, qemuError("Cannot load CRL '%s': %s", path, why)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fail(strerror(err))
	}
	out := &crl{revoked: map[string]map[string]bool{}}
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "X509 CRL" {
			continue
		}
		rl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return fail("ASN1 parser: Error in DER parsing.")
		}
		if !signedByOneOf(rl, cas) {
			return fail("The CRL is not signed by the CA")
		}
		key := string(rl.RawIssuer)
		if out.revoked[key] == nil {
			out.revoked[key] = map[string]bool{}
		}
		for _, e := range rl.RevokedCertificateEntries {
			out.revoked[key][e.SerialNumber.String()] = true
		}
		n++
	}
	if n == 0 {
		return fail("Base64 decoding error.")
	}
	return out, nil
}

func signedByOneOf(rl *x509.RevocationList, cas []*x509.Certificate) bool {
	for _, ca := range cas {
		if rl.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}

// isRevoked reports whether c's serial is listed by its issuer's CRL.
func (l *crl) isRevoked(c *x509.Certificate) bool {
	return l.revoked[string(c.RawIssuer)][c.SerialNumber.String()]
}

// verify is the tls.Config.VerifyConnection of a server with a CRL: any certificate of the
// client's verified chain that is listed fails the handshake.
func (l *crl) verify(cs tls.ConnectionState) error {
	for _, chain := range cs.VerifiedChains {
		for _, c := range chain {
			if l.isRevoked(c) {
				return fmt.Errorf("serial %s: %w", c.SerialNumber, server.ErrCertificateRevoked)
			}
		}
	}
	return nil
}
