// TLS configuration errors at start (docs/tls.md), qnbd against qemu-nbd 7.2 side by side:
// the same exit status and the same stderr after the program's name.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startFailure runs bin with args, which must make it exit, and returns its status and stderr
// with the "bin: " prefixes removed. The deadline only catches a server that started
// serving: on a loaded CI machine qemu-nbd once took more than 10 s to load its
// credentials and refuse "--tls-creds nope".
func startFailure(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q did not exit within 2 minutes: it started serving\n%s", bin, args, stderr.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	prefix := filepath.Base(bin) + ": "
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n") {
		out = append(out, strings.TrimPrefix(l, prefix))
	}
	return code, strings.Join(out, "\n")
}

func TestTLSStartupErrorsMatchQemuNBD(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	root := shortTempDir(t)
	img := newRaw(t, root, 1<<20)
	// damaged copies of the server directory
	damaged := func(name string, f func(dir string)) string {
		d := filepath.Join(root, name)
		must(t, os.MkdirAll(d, 0o700))
		for _, n := range []string{"ca-cert.pem", "server-cert.pem", "server-key.pem"} {
			b, err := os.ReadFile(filepath.Join(p.server, n))
			must(t, err)
			must(t, os.WriteFile(filepath.Join(d, n), b, 0o600))
		}
		f(d)
		return d
	}
	junk := func(file string) func(string) {
		return func(d string) { must(t, os.WriteFile(filepath.Join(d, file), []byte("junk\n"), 0o600)) }
	}
	gone := func(file string) func(string) {
		return func(d string) { must(t, os.Remove(filepath.Join(d, file))) }
	}
	mismatch := func(d string) {
		b, err := os.ReadFile(filepath.Join(p.good, "client-key.pem"))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(d, "server-key.pem"), b, 0o600))
	}
	wrongCA := func(d string) {
		b, err := os.ReadFile(filepath.Join(p.untrust, "client-cert.pem"))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(d, "server-cert.pem"), b, 0o600))
		b, err = os.ReadFile(filepath.Join(p.untrust, "client-key.pem"))
		must(t, err)
		must(t, os.WriteFile(filepath.Join(d, "server-key.pem"), b, 0o600))
	}
	creds := func(dir string) string { return "tls-creds-x509,id=t,endpoint=server,dir=" + dir }
	good := creds(p.server)
	for _, args := range [][]string{
		{"--object", creds("/nonexistent"), "--tls-creds", "t"},
		{"--object", creds(damaged("no-ca", gone("ca-cert.pem"))), "--tls-creds", "t"},
		{"--object", creds(damaged("no-cert", gone("server-cert.pem"))), "--tls-creds", "t"},
		{"--object", creds(damaged("no-key", gone("server-key.pem"))), "--tls-creds", "t"},
		{"--object", creds(damaged("junk-ca", junk("ca-cert.pem"))), "--tls-creds", "t"},
		{"--object", creds(damaged("junk-cert", junk("server-cert.pem"))), "--tls-creds", "t"},
		{"--object", creds(damaged("junk-key", junk("server-key.pem"))), "--tls-creds", "t"},
		{"--object", creds(damaged("junk-crl", junk("ca-crl.pem"))), "--tls-creds", "t"},
		{"--object", creds(damaged("mismatch", mismatch)), "--tls-creds", "t"},
		{"--object", creds(damaged("wrong-ca", wrongCA)), "--tls-creds", "t"},
		{"--object", "tls-creds-x509,id=t,endpoint=client,dir=" + p.good, "--tls-creds", "t"},
		{"--object", "tls-creds-x509,id=t,endpoint=client,dir=/nonexistent", "--tls-creds", "t"},
		{"--object", "tls-creds-x509,id=t,endpoint=client,dir=" + damaged("client-junk-ca", junk("ca-cert.pem"))},
		{"--object", "tls-creds-x509,id=t,dir=" + p.good, "--tls-creds", "t"},
		{"--object", "tls-creds-x509,id=t,endpoint=server", "--tls-creds", "t"},
		{"--object", "tls-creds-x509,endpoint=server,dir=" + p.server, "--tls-creds", "t"},
		{"--object", good + ",bogus=1", "--tls-creds", "t"},
		{"--object", good + ",verify-peer=maybe", "--tls-creds", "t"},
		{"--object", "tls-creds-x509,id=t,endpoint=sideways,dir=" + p.server},
		{"--object", "nosuch,id=t", "--tls-creds", "t"},
		{"--object", "tls-creds-x509,id=1t,endpoint=server,dir=" + p.server},
		{"--object", good, "--tls-creds", "nope"},
		{"--object", good, "--object", "authz-simple,id=a,identity=x", "--tls-creds", "a"},
		{"--object", good, "--object", "authz-simple,id=a,identity=x", "--tls-authz", "a"},
		{"--tls-hostname", "foo"},
		{"--object", good, "--tls-creds", "t", "--tls-hostname", "foo"},
		{"--object", good, "--object", good, "--tls-creds", "t"},
		{"--object", `{"qom-type":"tls-creds-x509","id":"t","endpoint":"server","dir":"` + p.server + `","verify-peer":"on"}`},
		{"--object", `{"qom-type":"tls-creds-x509","id":"t","endpoint":"server","dir":"` + p.server + `"`},
		{"--object", `{"qom-type":"tls-creds-x509","id":"t","endpoint":"server","dir":"` + p.server + `","bogus":1}`},
		{"--object", "authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.2.match=y,policy=deny"},
		{"--object", "authz-list,id=a,ru*les=x"},
		{"--object", ""},
	} {
		args := append(append([]string{}, args...), "-f", "raw", "-k", filepath.Join(root, "sock"), img)
		qc, qerr := startFailure(t, "qemu-nbd", args...)
		c, err := startFailure(t, qnbdBin, args...)
		if c != qc || err != qerr {
			t.Errorf("%q:\n qemu-nbd: exit %d %q\n qnbd:     exit %d %q", args, qc, qerr, c, err)
		}
	}
}

// What qemu-nbd accepts and qnbd cannot honour is refused at start with one line.
func TestTLSUnsupportedRefusedAtStart(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	img := newRaw(t, shortTempDir(t), 1<<20)
	for obj, want := range map[string]string{
		"tls-creds-x509,id=t,endpoint=server,dir=" + p.server + ",priority=NORMAL": "priority=",
		"tls-creds-x509,id=t,endpoint=server,dir=" + p.server + ",passwordid=s0":   "passwordid=",
		"tls-creds-anon,id=t,endpoint=server":                                      "tls-creds-anon",
		"tls-creds-psk,id=t,endpoint=server,dir=" + p.server:                       "TLS-PSK is not supported",
	} {
		code, out := startFailure(t, qnbdBin, "--object", obj, "--tls-creds", "t", "-f", "raw", img)
		if code != 1 || strings.Count(out, "\n") != 0 || !strings.Contains(out, want) {
			t.Errorf("%s: exit %d, %q; want exit 1 and one line about %s", obj, code, out, want)
		}
	}
}
