// Tests of the web configuration file: TLS, basic auth and client certificates enforced on a
// real listener with certificates made at test time, and one-line errors for bad files.
package metrics

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/qnbd/qnbd/internal/testing/testpki"
)

// webFixture is a running endpoint secured by a web config file, and the PKI behind it.
type webFixture struct {
	addr   string
	ca     *testpki.CA
	dir    string
	caFile string
}

// serveWeb writes the web config (with {{dir}} replaced by the fixture directory, which holds
// server.crt, server.key and ca.crt) and serves a fresh registry through it until the test
// ends.
func serveWeb(t *testing.T, config string) *webFixture {
	t.Helper()
	f := &webFixture{ca: testpki.NewCA(t, "metrics test CA"), dir: t.TempDir()}
	f.ca.Server(t, "localhost").WritePEM(t, f.dir, "server")
	f.caFile = filepath.Join(f.dir, "ca.crt")
	f.ca.WriteCert(t, f.caFile)
	path := filepath.Join(f.dir, "web.yml")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(config, "{{dir}}", f.dir)), 0o600); err != nil {
		t.Fatal(err)
	}
	web := WebConfigFile(path)
	if err := web.Validate(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(Options{WebConfig: web}).ServeListener(ctx, ln, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
	return f
}

// client trusts the fixture's CA and presents certs[0], if given, whichever CAs the server
// asks for (crypto/tls would otherwise hold back a certificate of a CA the server does not
// name, and the server would only see no certificate).
func (f *webFixture) client(certs ...tls.Certificate) *http.Client {
	cfg := &tls.Config{RootCAs: f.ca.Pool(), MinVersion: tls.VersionTLS12}
	if len(certs) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &certs[0], nil
		}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
}

// fetch GETs url with basic auth user:pass (none when user is ""), returning the status and
// body, or the transport error.
func fetch(c *http.Client, url, user, pass string) (int, string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, "", err
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func TestWebConfigTLSWithBasicAuthRefusesWrongPasswords(t *testing.T) {
	f := serveWeb(t, fmt.Sprintf(`tls_server_config:
  cert_file: {{dir}}/server.crt
  key_file: {{dir}}/server.key
basic_auth_users:
  prometheus: %s
`, bcryptHash(t, "s3cret")))
	c := f.client()
	url := "https://localhost:" + port(f.addr) + "/metrics"

	code, body, err := fetch(c, url, "prometheus", "s3cret")
	if err != nil || code != http.StatusOK || !strings.Contains(body, "qnbd_build_info") {
		t.Fatalf("right password: %d %v, body has metrics: %v", code, err, strings.Contains(body, "qnbd_build_info"))
	}
	for _, tc := range []struct{ name, user, pass string }{
		{"wrong password", "prometheus", "guess"},
		{"unknown user", "root", "s3cret"},
		{"no credentials", "", ""},
	} {
		code, body, err := fetch(c, url, tc.user, tc.pass)
		if err != nil || code != http.StatusUnauthorized || strings.Contains(body, "qnbd_") {
			t.Errorf("%s: %d %v, want 401 without metrics; body %q", tc.name, code, err, body)
		}
	}
	// Every path is behind the same check, the probes included.
	if code, _, err := fetch(c, "https://"+f.addr+"/healthz", "", ""); err != nil || code != http.StatusUnauthorized {
		t.Errorf("/healthz without credentials: %d %v, want 401", code, err)
	}
	// Plain HTTP to the TLS port gets no metrics: Go's TLS server answers 400.
	code, body, err = fetch(&http.Client{Timeout: 10 * time.Second}, "http://"+f.addr+"/metrics", "prometheus", "s3cret")
	if err == nil && (code == http.StatusOK || strings.Contains(body, "qnbd_")) {
		t.Errorf("plain HTTP to the TLS endpoint: %d %q", code, body)
	}
	t.Logf("plain HTTP to the TLS endpoint: status %d, error %v", code, err)
}

func TestWebConfigRequiredClientCertRefusesOthers(t *testing.T) {
	f := serveWeb(t, `tls_server_config:
  cert_file: {{dir}}/server.crt
  key_file: {{dir}}/server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: {{dir}}/ca.crt
`)
	url := "https://" + f.addr + "/metrics"
	good := f.ca.Client(t, "prometheus")
	if code, body, err := fetch(f.client(good.TLS()), url, "", ""); err != nil || code != http.StatusOK ||
		!strings.Contains(body, "qnbd_build_info") {
		t.Fatalf("trusted client cert: %d %v", code, err)
	}
	stranger := testpki.NewCA(t, "other CA").Client(t, "prometheus")
	expired := f.ca.ClientValid(t, "prometheus", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		alert string // the TLS alert the server sends
	}{
		{"no client cert", nil, "certificate required"},
		{"client cert of another CA", []tls.Certificate{stranger.TLS()}, "unknown certificate authority"},
		{"expired client cert", []tls.Certificate{expired.TLS()}, "expired certificate"},
	} {
		// A fresh client each time: no connection is reused across cases.
		code, body, err := fetch(f.client(tc.certs...), url, "", "")
		if err == nil || !strings.Contains(err.Error(), tc.alert) {
			t.Errorf("%s: got %d %q, %v; want the TLS handshake refused with %q", tc.name, code, body, err, tc.alert)
		}
	}
}

func TestWebConfigValidateGivesOneLine(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, config, want string }{
		{"unknown key", "tls_server_config:\n  cert_file: a\n  key_file: b\nbasic_auth: {}\n", "field basic_auth not found"},
		{"missing certificate", "tls_server_config:\n  cert_file: /nonexistent/c.crt\n  key_file: /nonexistent/c.key\n", "/nonexistent/c.crt"},
		{"key without certificate", "tls_server_config:\n  key_file: x.key\n", "missing one of cert or cert_file"},
		{"plain-text password", "basic_auth_users:\n  prometheus: s3cret\n", "bcrypt"},
		{"bad client auth", "tls_server_config:\n  cert_file: {{dir}}/s.crt\n  key_file: {{dir}}/s.key\n  client_auth_type: Sometimes\n", "invalid ClientAuth"},
		{"not YAML", "tls_server_config: [\n", "yaml"},
	} {
		ca := testpki.NewCA(t, "ca")
		ca.Server(t, "localhost").WritePEM(t, dir, "s")
		path := filepath.Join(dir, "web.yml")
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(tc.config, "{{dir}}", dir)), 0o600); err != nil {
			t.Fatal(err)
		}
		err := WebConfigFile(path).Validate()
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, path+": ") || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %q, want one line starting with the path and naming %q", tc.name, msg, tc.want)
		}
	}
	if err := WebConfigFile(filepath.Join(dir, "absent.yml")).Validate(); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("absent file: %v", err)
	}
	if err := WebConfigFile("").Validate(); err != nil {
		t.Errorf("no file: %v", err)
	}
}

func TestOneLineJoinsYAMLErrorLines(t *testing.T) {
	for in, want := range map[string]string{
		"yaml: unmarshal errors:\n  line 1: a\n  line 2: b": "yaml: unmarshal errors: line 1: a; line 2: b",
		"single":   "single",
		"a\nb\n":   "a; b",
		"":         "",
		"  x:\n y": "x: y",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}
