// A real Prometheus scrapes qnbd's metrics endpoint secured by --metrics-web-config (TLS with
// a required client certificate, and basic auth with a bcrypt hash), with certificates made
// at test time. Alongside the good job, jobs with a wrong password, without a client
// certificate, and over plain HTTP must each be refused, and Prometheus must say why.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/qnbd/qnbd/internal/testing/testpki"
)

// jobTarget is Prometheus's view of one scrape target, with its job.
type jobTarget struct {
	Labels    map[string]string `json:"labels"`
	Health    string            `json:"health"`
	LastError string            `json:"lastError"`
}

// targetsByJob returns the active targets by their job label.
func (p *prometheus) targetsByJob() map[string]jobTarget {
	p.t.Helper()
	var d struct {
		ActiveTargets []jobTarget `json:"activeTargets"`
	}
	p.api("/api/v1/targets?state=active", &d)
	out := map[string]jobTarget{}
	for _, tg := range d.ActiveTargets {
		out[tg.Labels["job"]] = tg
	}
	return out
}

func TestPrometheusScrapesSecuredMetrics(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := testpki.NewCA(t, "qnbd e2e CA")
	srv := ca.Server(t, "localhost").WritePEM(t, dir, "server")
	cli := ca.Client(t, "prometheus").WritePEM(t, dir, "prometheus")
	caFile := filepath.Join(dir, "ca.crt")
	ca.WriteCert(t, caFile)
	hash, err := bcrypt.GenerateFromPassword([]byte("right horse"), bcrypt.MinCost)
	must(t, err)
	webConfig := filepath.Join(dir, "web.yml")
	must(t, os.WriteFile(webConfig, []byte(fmt.Sprintf(`tls_server_config:
  cert_file: %s
  key_file: %s
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: %s
basic_auth_users:
  prometheus: %s
`, srv.Cert, srv.Key, caFile, hash)), 0o600))
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(body), 0o600))
		return p
	}
	right, wrong := write("right.pw", "right horse"), write("wrong.pw", "wrong horse")

	img := newQcow2(t, dir, "1M", "")
	s := startQnbd(t, serverConfig{Metrics: true, Args: []string{"--metrics-web-config", webConfig, "-f", "qcow2", "-x", "disk", img}})

	// One job per case; every job but plain-http trusts the CA, and every job but
	// no-client-cert presents the client certificate.
	job := func(name, scheme, password string, clientCert bool) string {
		j := fmt.Sprintf("  - job_name: %s\n    scheme: %s\n", name, scheme)
		if scheme == "https" {
			j += fmt.Sprintf("    tls_config:\n      ca_file: %s\n      server_name: localhost\n", caFile)
			if clientCert {
				j += fmt.Sprintf("      cert_file: %s\n      key_file: %s\n", cli.Cert, cli.Key)
			}
		}
		j += fmt.Sprintf("    basic_auth:\n      username: prometheus\n      password_file: %s\n", password)
		return j + fmt.Sprintf("    static_configs:\n      - targets: [%q]\n", s.MetricsAddr)
	}
	prom := startPrometheusJobs(t, job("qnbd", "https", right, true)+
		job("wrong-password", "https", wrong, true)+
		job("no-client-cert", "https", right, false)+
		job("plain-http", "http", right, true))

	// Each refused job must show its own reason; the good one must be up.
	want := map[string]string{
		"qnbd":           "",
		"wrong-password": "401 Unauthorized",
		"no-client-cert": "certificate required",
		"plain-http":     "400 Bad Request",
	}
	var last map[string]jobTarget
	for deadline := time.Now().Add(promDeadline); ; time.Sleep(250 * time.Millisecond) {
		last = prom.targetsByJob()
		done := true
		for name, reason := range want {
			tg := last[name]
			if reason == "" {
				done = done && tg.Health == "up"
			} else {
				done = done && tg.Health == "down" && strings.Contains(tg.LastError, reason)
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("targets after %v: %+v, want qnbd up and the others down with %v", promDeadline, last, want)
		}
	}
	for name := range want {
		t.Logf("%s: %s %q", name, last[name].Health, last[name].LastError)
	}
	// Samples arrived through the secured endpoint, and only through it.
	prom.waitFor(`qnbd_build_info{job="qnbd"}`, 1)
	prom.waitFor(`count(qnbd_nbd_connections{job="qnbd", export="disk"})`, 1)
	prom.waitFor(`count({job=~"wrong-password|no-client-cert|plain-http", __name__=~"qnbd_.*"}) or vector(0)`, 0)
}
