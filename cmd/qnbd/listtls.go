// -L over TLS: the checks qemu-nbd makes of --tls-creds, --tls-authz and --tls-hostname in
// list mode, and the client side of a tls-creds-x509 object with endpoint=client.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"

	"github.com/qnbd/qnbd/internal/tlscreds"
)

// checkList makes qemu-nbd's list-mode checks of the TLS options (the server-mode ones are
// check's) and returns the client credentials --tls-creds names, nil without TLS.
func (ts *tlsSetup) checkList() (*tlscreds.Spec, error) {
	if ts.credsID == "" {
		switch {
		case ts.authzID != "":
			return nil, errors.New("--tls-authz is not permitted without --tls-creds")
		case ts.hostname != "":
			return nil, errors.New("--tls-hostname is not permitted without --tls-creds")
		}
		return nil, nil
	}
	if ts.authzID != "" {
		return nil, qemuErrorf("TLS authorization is incompatible with export list")
	}
	o := ts.objects.Get(ts.credsID)
	switch {
	case o == nil:
		return nil, qemuErrorf("Failed to get TLS creds: No TLS credentials with id '%s'", ts.credsID)
	case o.Type != "tls-creds-x509":
		return nil, qemuErrorf("Failed to get TLS creds: Object with id '%s' is not TLS credentials", ts.credsID)
	}
	spec, err := tlscreds.SpecFromObject(o)
	if err != nil {
		return nil, err
	}
	if spec.Server {
		return nil, qemuErrorf("Failed to get TLS creds: Expected TLS credentials for a client endpoint")
	}
	return spec, nil
}

// clientTLS is the TLS configuration of a client endpoint object, as QEMU's: the CA of
// DIR/ca-cert.pem, the client certificate DIR/client-cert.pem with DIR/client-key.pem when
// both exist, and with verify-peer (the default) the server's certificate checked against
// the CA and, when hostname is not empty, against hostname.
func clientTLS(spec *tlscreds.Spec, hostname string) (*tls.Config, error) {
	ca, err := os.ReadFile(filepath.Join(spec.Dir, "ca-cert.pem"))
	if err != nil {
		return nil, qemuErrorf("Unable to read CA certificate %s: %v", filepath.Join(spec.Dir, "ca-cert.pem"), err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return nil, qemuErrorf("Unable to import CA certificate list %s", filepath.Join(spec.Dir, "ca-cert.pem"))
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: hostname, InsecureSkipVerify: true}
	certFile, keyFile := filepath.Join(spec.Dir, "client-cert.pem"), filepath.Join(spec.Dir, "client-key.pem")
	if exists(certFile) && exists(keyFile) {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, qemuErrorf("Cannot load certificate '%s' & key '%s': %v", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if spec.VerifyPeer {
		// Go checks the host name only through ServerName; QEMU checks it only when it has
		// one, so the chain is verified here, with the name when there is one.
		cfg.VerifyConnection = func(st tls.ConnectionState) error {
			if len(st.PeerCertificates) == 0 {
				return qemuErrorf("No certificate was found.")
			}
			inter := x509.NewCertPool()
			for _, c := range st.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: hostname})
			return err
		}
	}
	return cfg, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
