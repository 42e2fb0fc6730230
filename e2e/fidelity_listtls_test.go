// -L over TLS: qnbd -L and qemu-nbd -L with client credentials (--object
// tls-creds-x509,...,endpoint=client --tls-creds) list TLS servers alike, and refuse the
// same option mistakes alike (docs/qemu-nbd-fidelity.md).
package e2e

import (
	"strconv"
	"testing"
)

// clientCreds are the options that give -L the client certificates in dir.
func clientCreds(dir string) []string {
	return []string{"--object", "tls-creds-x509,id=c0,endpoint=client,dir=" + dir, "--tls-creds", "c0"}
}

// TestListOverTLSMatchesQemuNBD lists a qemu-nbd and a qnbd TLS server over TCP (the server
// name checked against -b) and over a Unix socket (with --tls-hostname; without it both
// refuse to go on).
func TestListOverTLSMatchesQemuNBD(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	img := newRaw(t, shortTempDir(t), 1<<20)
	args := append(tlsArgs(p.server, false), "-f", "raw", "-x", "secure", img)
	for _, s := range []*server{
		startQemuNBD(t, serverConfig{TCP: true, Args: args}),
		startQnbd(t, serverConfig{TCP: true, Args: args}),
		startQemuNBD(t, serverConfig{Args: args}),
		startQnbd(t, serverConfig{Args: args}),
	} {
		var where [][]string
		if s.Sock != "" {
			where = [][]string{{"-k", s.Sock}, {"-k", s.Sock, "--tls-hostname", "localhost"}}
		} else {
			where = [][]string{{"-b", "127.0.0.1", "-p", strconv.Itoa(s.Port)}}
		}
		for _, w := range where {
			r := sameList(t, append(append([]string{"-L"}, w...), clientCreds(p.good)...)...)
			// Over a Unix socket without --tls-hostname, qemu-nbd has no name to check the
			// server's certificate against and fails ("No hostname for certificate
			// validation"): sameList has compared that.
			if r.Code != 0 && len(w) != 2 {
				t.Errorf("%s: qemu-nbd -L %v over TLS failed: %s", s.bin, w, r.Stderr)
			}
		}
	}
}

// TestListTLSRefusalsMatchQemuNBD compares the option mistakes of -L with TLS.
func TestListTLSRefusalsMatchQemuNBD(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	sock := []string{"-L", "-k", "/nonexistent/s.sock"}
	for _, extra := range [][]string{
		{"--tls-hostname", "localhost"},
		{"--tls-creds", "c0"},
		append(clientCreds(p.good), "--object", "authz-simple,id=a0,identity=CN=x", "--tls-authz", "a0"),
		{"--object", "tls-creds-x509,id=c0,endpoint=server,dir=" + p.server, "--tls-creds", "c0"},
		{"--object", "authz-simple,id=c0,identity=CN=x", "--tls-creds", "c0"},
	} {
		if r := sameList(t, append(append([]string{}, sock...), extra...)...); r.Code == 0 {
			t.Errorf("%v: exit 0", extra)
		}
	}
}
