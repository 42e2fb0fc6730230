package authz

import "crypto/x509"

// Check is the authorisation step of qemu-nbd's TLS handshake for a client whose
// certificate chain has been verified: name the client with SubjectDN, ask a, and refuse
// in qemu-nbd's words. Its errors are the text qemu-nbd prints after "option negotiation
// failed: ":
//
//	Cannot get client distinguished name: ASN1 parser: Value is not valid.
//	TLS x509 authz check for C=GB,O=Example,CN=client1 is denied
func Check(a Authorizer, cert *x509.Certificate) error {
	dn, err := SubjectDN(cert)
	if err != nil {
		return errorf("Cannot get client distinguished name: %v", err)
	}
	if !a.Allow(dn) {
		return errorf("TLS x509 authz check for %s is denied", dn)
	}
	return nil
}
