// Go's TLS handshake errors in qemu-nbd's words, so that the line a refused client leaves in
// the log reads as qemu-nbd's (docs/hostile-clients.md lists each case as measured).
package server

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// GnuTLS's texts, as qemu-nbd 7.2 prints them after "option negotiation failed: ".
const (
	msgTLSTerminated = "TLS handshake failed: The TLS connection was non-properly terminated."
	msgTLSPull       = "TLS handshake failed: Error in the pull function."
	msgTLSPush       = "TLS handshake failed: Error in the push function."
	msgTLSUnexpected = "TLS handshake failed: An unexpected TLS packet was received."
	msgTLSAlert      = "TLS handshake failed: A TLS fatal alert has been received."
	msgNoCertificate = "Verify failed: No certificate was found."
	msgNotTrusted    = "The certificate is not trusted"
	msgRevoked       = "The certificate has been revoked"
)

// ErrCertificateRevoked is what a Config.TLSConfig's verification returns for a client
// certificate listed in the CRL; it is reported as qemu-nbd reports a revoked certificate.
var ErrCertificateRevoked = errors.New("certificate revoked")

// gnutlsText maps an error of tls.Conn.Handshake on the server side onto qemu-nbd's text.
func gnutlsText(err error) string {
	var cve *tls.CertificateVerificationError
	var rhe tls.RecordHeaderError
	var oe *net.OpError
	switch {
	case errors.Is(err, ErrCertificateRevoked):
		return msgRevoked
	case errors.As(err, &cve):
		return msgNotTrusted
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, net.ErrClosed):
		// A client that hangs up (or stalls until the handshake limit shuts the socket)
		// mid-handshake: GnuTLS reads end of file.
		return msgTLSTerminated
	case errors.As(err, &oe) && oe.Op == "write":
		return msgTLSPush // the socket failed under a write (EPIPE, ECONNRESET)
	case errors.Is(err, syscall.ECONNRESET), errors.As(err, &oe):
		return msgTLSPull // the socket failed under a read: a client that reset it
	case errors.As(err, &rhe):
		// Not a TLS record at all: plaintext or garbage where the ClientHello should be.
		return msgTLSUnexpected
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "client didn't provide a certificate"):
		return msgNoCertificate
	case strings.HasPrefix(s, "remote error: "):
		// The client refused us (our certificate, usually) with an alert.
		return msgTLSAlert
	case strings.Contains(s, "unexpected message"), strings.Contains(s, "oversized record"),
		strings.Contains(s, "unsupported SSLv2"):
		return msgTLSUnexpected
	case strings.Contains(s, "failed to verify certificate"), strings.Contains(s, "bad certificate"):
		return msgNotTrusted
	}
	return "TLS handshake failed: " + s
}
