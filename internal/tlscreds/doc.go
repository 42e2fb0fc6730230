// Package tlscreds turns qemu-nbd's --object tls-creds-x509 into the TLS configuration the
// server hands each STARTTLS (docs/tls.md):
//
//   - Spec reads the object's properties as QEMU 7.2 does (endpoint, dir, verify-peer,
//     sanity-check) and refuses what qnbd cannot honour (priority=, passwordid=) with a
//     one-line reason;
//   - Load reads DIR/ca-cert.pem, DIR/server-cert.pem, DIR/server-key.pem and the optional
//     DIR/ca-crl.pem, makes QEMU's sanity checks, and reports every failure in QEMU's words;
//   - the resulting tls.Config allows TLS 1.2 and 1.3 (1.3 whenever the client has it), and
//     with verify-peer (the default) requires a client certificate signed by the CA and not
//     listed in the CRL;
//   - Store holds the current configuration and reloads it (SIGHUP): a set that fails to load
//     leaves the previous one in place.
package tlscreds
