package tlscreds

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"testing"
	"time"
)

// TLS 1.3 whenever the client has it, 1.2 when it has no more, nothing older.
func TestTLSVersionsPreferThirteenAllowTwelveRefuseOlder(t *testing.T) {
	a := newCA(t)
	now := time.Now()
	st, err := NewStore(spec(t, "tls-creds-x509,id=t,endpoint=server,dir="+
		a.serverDir(t.TempDir(), now.Add(-time.Hour), now.Add(time.Hour))))
	if err != nil {
		t.Fatal(err)
	}
	c, k := a.issue(&x509.Certificate{Subject: pkix.Name{CommonName: "c"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, now.Add(-time.Hour), now.Add(time.Hour))
	cert := tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: k}
	pool := x509.NewCertPool()
	pool.AddCert(a.cert)
	for _, tc := range []struct {
		name     string
		min, max uint16
		want     uint16 // 0: refused
	}{
		{"any", 0, 0, tls.VersionTLS13},
		{"up to 1.2", 0, tls.VersionTLS12, tls.VersionTLS12},
		{"up to 1.1", tls.VersionTLS10, tls.VersionTLS11, 0},
	} {
		sc, cc := net.Pipe()
		done := make(chan uint16, 1)
		go func() {
			s := tls.Server(sc, st.Config())
			if s.Handshake() != nil {
				done <- 0
			} else {
				done <- s.ConnectionState().Version
			}
			sc.Close()
		}()
		cl := tls.Client(cc, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tc.min,
			MaxVersion: tc.max, Certificates: []tls.Certificate{cert}})
		cl.Handshake()
		cc.Close()
		if got := <-done; got != tc.want {
			t.Errorf("%s: server negotiated %#x, want %#x", tc.name, got, tc.want)
		}
	}
}
