// Package testpki makes X.509 certificates for tests at test time, with Go's crypto/x509, so
// that no key is ever committed: a CA, server certificates for loopback, and client
// certificates, written as PEM files a real tool (Prometheus, curl, openssl) can read.
//
//	ca := testpki.NewCA(t, "qnbd test CA")
//	srv := ca.Server(t, "localhost")             // SANs localhost, 127.0.0.1, ::1
//	cli := ca.Client(t, "prometheus")
//	paths := srv.WritePEM(t, dir, "server")      // dir/server.crt, dir/server.key
//	ca.WriteCert(t, filepath.Join(dir, "ca.crt"))
//	cfg := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cli.TLS()}}
//
// # Contract
//
// Keys are ECDSA P-256, fresh for every certificate. Certificates are valid from an hour ago
// for a day, unless a test asks for other bounds through ClientValid (expired and not-yet-valid cases). Files
// are written with mode 0600 (keys) and 0644 (certificates). Every failure ends the test
// through t.Fatal; nothing here is for production use.
package testpki
