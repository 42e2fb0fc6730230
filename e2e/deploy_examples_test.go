// The TLS deployment examples of deploy/ run as they are written, against the built binary:
// the systemd unit's ExecStart with the TLS conf example's QNBD_ARGS, the example authz list
// and web config, and the ExecReload command of the TLS drop-in; and the Kubernetes TLS
// overlay's container args with its authz ConfigMap. Only host paths, the bind address and the
// ports are rewritten to the test's own. Real clients (nbdinfo over TLS, an HTTPS scraper) must
// be admitted or refused as the examples' rules say.
package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/qnbd/qnbd/internal/testing/raceenv"
	"github.com/qnbd/qnbd/internal/testing/syncbuf"
	"github.com/qnbd/qnbd/internal/testing/testpki"
)

// deployFile is a file of the repository's deploy/ directory.
func deployFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "deploy", rel))
	must(t, err)
	return string(b)
}

// settingOf returns the value of the one KEY=value line of a unit or environment file.
func settingOf(t *testing.T, text, key string) string {
	t.Helper()
	var vals []string
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), key+"="); ok {
			vals = append(vals, v)
		}
	}
	if len(vals) != 1 {
		t.Fatalf("want one %s= line, have %q", key, vals)
	}
	return vals[0]
}

// examplePKI writes a tls-creds-x509 directory (QEMU's names) under dir/tls and one client
// directory (libnbd's names) per subject, and returns the CA and the client directories.
func examplePKI(t *testing.T, dir string, clients map[string]pkix.Name) (*testpki.CA, map[string]string) {
	t.Helper()
	ca := testpki.NewCA(t, "example CA")
	must(t, os.MkdirAll(filepath.Join(dir, "tls"), 0o750))
	ca.WriteCert(t, filepath.Join(dir, "tls", "ca-cert.pem"))
	srv := ca.Server(t, "localhost")
	srv.WriteCert(t, filepath.Join(dir, "tls", "server-cert.pem"))
	srv.WriteKey(t, filepath.Join(dir, "tls", "server-key.pem"))
	dirs := map[string]string{}
	for name, subject := range clients {
		d := filepath.Join(dir, "clients", name)
		must(t, os.MkdirAll(d, 0o700))
		ca.WriteCert(t, filepath.Join(d, "ca-cert.pem"))
		c := ca.ClientSubject(t, subject)
		c.WriteCert(t, filepath.Join(d, "client-cert.pem"))
		c.WriteKey(t, filepath.Join(d, "client-key.pem"))
		dirs[name] = d
	}
	return ca, dirs
}

// exampleServer is a qnbd started with an example's arguments.
type exampleServer struct {
	t       *testing.T
	cmd     *exec.Cmd
	out     *syncbuf.Buffer
	nbd     string // host:port
	metrics string // host:port
}

func startExample(t *testing.T, args []string, nbd, metrics string) *exampleServer {
	t.Helper()
	s := &exampleServer{t: t, out: &syncbuf.Buffer{}, nbd: nbd, metrics: metrics}
	s.cmd = exec.Command(qnbdBin, args...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.Env = raceenv.Environ()
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, s.cmd.Start())
	exited := make(chan struct{})
	go func() { s.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			s.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("qnbd %q output:\n%s", args, s.out)
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c1, err1 := net.DialTimeout("tcp", nbd, time.Second)
		c2, err2 := net.DialTimeout("tcp", metrics, time.Second)
		for _, c := range []net.Conn{c1, c2} {
			if c != nil {
				c.Close()
			}
		}
		if err1 == nil && err2 == nil {
			return s
		}
		select {
		case <-exited:
			t.Fatalf("qnbd exited before listening:\n%s", s.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("qnbd not listening after 30s: %v %v\n%s", err1, err2, s.out)
		}
	}
}

// size runs nbdinfo --size against the export over TLS with the client directory (plaintext
// when clientDir is ""), returning its output and whether it succeeded.
func (s *exampleServer) size(clientDir string) (string, bool) {
	s.t.Helper()
	uri := "nbd://" + s.nbd + "/disk"
	if clientDir != "" {
		uri = "nbds://" + s.nbd + "/disk?tls-certificates=" + clientDir
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nbdinfo", "--size", uri).CombinedOutput()
	return strings.TrimSpace(string(out)), err == nil
}

// requireAdmission checks which clients get in: want maps a client directory ("" for a
// plaintext client) to whether it must be admitted.
func (s *exampleServer) requireAdmission(want map[string]bool) {
	s.t.Helper()
	for dir, admit := range want {
		out, ok := s.size(dir)
		if ok != admit || (admit && out != "1048576") {
			s.t.Errorf("client %q: nbdinfo %v %q, want admitted=%v with size 1048576", dir, ok, out, admit)
		}
	}
}

// handshakes scrapes /metrics with c and returns qnbd_nbd_handshakes_total by result.
func handshakes(t *testing.T, c *http.Client, url, user, pass string) (int, map[string]float64) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	must(t, err)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	out := map[string]float64{}
	for _, l := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(l, `qnbd_nbd_handshakes_total{result="`)
		if !ok {
			continue
		}
		res, val, _ := strings.Cut(rest, `"} `)
		out[res], _ = strconv.ParseFloat(val, 64)
	}
	return resp.StatusCode, out
}

func freeAddr(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
}

func TestDeploySystemdTLSExampleServes(t *testing.T) {
	t.Parallel()
	root := shortTempDir(t)
	etc := filepath.Join(root, "etc", "qnbd")
	ca, clients := examplePKI(t, etc, map[string]pkix.Name{
		// deploy/systemd/qnbd-authz.json.example allows these two ...
		"backup": {Organization: []string{"Example"}, CommonName: "backup1.example.com"},
		"hv":     {Organization: []string{"Example"}, CommonName: "hv7.example.com"},
		// ... and nobody else.
		"intruder": {Organization: []string{"Example"}, CommonName: "laptop.example.com"},
	})
	must(t, os.WriteFile(filepath.Join(etc, "disk.authz.json"), []byte(deployFile(t, "systemd/qnbd-authz.json.example")), 0o640))
	hash, err := bcrypt.GenerateFromPassword([]byte("scrape"), bcrypt.MinCost)
	must(t, err)
	web := strings.ReplaceAll(deployFile(t, "systemd/qnbd-web.yml.example"), "/etc/qnbd/", etc+"/")
	web = strings.Replace(web, "REPLACE_WITH_BCRYPT_HASH", string(hash), 1)
	must(t, os.WriteFile(filepath.Join(etc, "web.yml"), []byte(web), 0o640))
	img := newQcow2(t, root, "1M", "")

	// ExecStart of qnbd@disk.service with /etc/qnbd/disk.conf's QNBD_ARGS, as systemd would
	// run it; /etc/qnbd, /var/lib/qnbd, the address and the ports moved to the test's own.
	nbd, metrics := freeAddr(t), freeAddr(t)
	_, nbdPort, _ := net.SplitHostPort(nbd)
	qnbdArgs := strings.NewReplacer("/etc/qnbd/", etc+"/", "192.0.2.10:9811", metrics, "-p 10809", "-p "+nbdPort,
		"-b 192.0.2.10", "-b 127.0.0.1").Replace(settingOf(t, deployFile(t, "systemd/qnbd-tls.conf.example"), "QNBD_ARGS"))
	execStart := strings.NewReplacer("/var/lib/qnbd/%i.qcow2", img, "%i", "disk", "$QNBD_ARGS", qnbdArgs).
		Replace(settingOf(t, deployFile(t, "systemd/qnbd@.service"), "ExecStart"))
	argv := strings.Fields(execStart)
	if argv[0] != "/usr/local/bin/qnbd" || strings.Contains(execStart, "=/etc/") || strings.Contains(execStart, " /var/") ||
		strings.Contains(execStart, "192.0.2") {
		t.Fatalf("rewritten ExecStart still names the host: %s", execStart)
	}
	s := startExample(t, argv[1:], nbd, metrics)

	s.requireAdmission(map[string]bool{clients["backup"]: true, clients["hv"]: true, clients["intruder"]: false, "": false})

	// The scraper the web config example admits: CA-signed client certificate and password.
	cert, err := tls.LoadX509KeyPair(filepath.Join(clients["backup"], "client-cert.pem"), filepath.Join(clients["backup"], "client-key.pem"))
	must(t, err)
	scraper := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}}}}
	url := "https://" + metrics + "/metrics"
	code, counts := handshakes(t, scraper, url, "prometheus", "scrape")
	if code != http.StatusOK || counts["ok"] < 2 || counts["authz_denied"] < 1 || counts["tls_required"] < 1 {
		t.Errorf("metrics: %d %v, want 200 with ok>=2, authz_denied>=1, tls_required>=1", code, counts)
	}
	if code, _ := handshakes(t, scraper, url, "prometheus", "guess"); code != http.StatusUnauthorized {
		t.Errorf("metrics with a wrong password: %d, want 401", code)
	}
	noCert := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	if code, _ := handshakes(t, noCert, url, "prometheus", "scrape"); code != 0 {
		t.Errorf("metrics without a client certificate: %d, want the TLS handshake refused", code)
	}

	// systemctl reload runs the drop-in's ExecReload: qnbd keeps serving, and a list that no
	// longer parses leaves the example's rules in force.
	must(t, os.WriteFile(filepath.Join(etc, "disk.authz.json"), []byte(`{"policy": `), 0o640))
	reload := strings.Fields(strings.ReplaceAll(settingOf(t, deployFile(t, "systemd/qnbd@.service.d/tls.conf"), "ExecReload"),
		"$MAINPID", strconv.Itoa(s.cmd.Process.Pid)))
	if out, err := exec.Command(reload[0], reload[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("ExecReload %q: %v %s", reload, err, out)
	}
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(s.out.String(), "keeping the previous"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no failed-reload line after ExecReload:\n%s", s.out)
		}
	}
	s.requireAdmission(map[string]bool{clients["backup"]: true, clients["intruder"]: false})
}

func TestDeployK8sTLSOverlayServes(t *testing.T) {
	t.Parallel()
	root := shortTempDir(t)
	etc := filepath.Join(root, "etc", "qnbd")
	_, clients := examplePKI(t, etc, map[string]pkix.Name{
		// deploy/k8s/tls/authz-configmap.yaml allows these two ...
		"hv":     {Organization: []string{"Example"}, CommonName: "hypervisor-7"},
		"backup": {Organization: []string{"Example"}, CommonName: "backup"},
		// ... and nobody else.
		"intruder": {Organization: []string{"Example"}, CommonName: "backup-2"},
	})
	// The container args and the ConfigMap's authz.json, read with python3's yaml module.
	var manifest struct {
		Args  []string `json:"args"`
		Authz string   `json:"authz"`
	}
	out, err := exec.Command(pythonYAML(), "-c", `
import json, sys, yaml
sts = yaml.safe_load(open(sys.argv[1]))
cm = yaml.safe_load(open(sys.argv[2]))
print(json.dumps({"args": sts["spec"]["template"]["spec"]["containers"][0]["args"], "authz": cm["data"]["authz.json"]}))
`, "../deploy/k8s/tls/statefulset-tls.yaml", "../deploy/k8s/tls/authz-configmap.yaml").Output()
	must(t, err)
	must(t, json.Unmarshal(out, &manifest))
	must(t, os.MkdirAll(filepath.Join(etc, "authz"), 0o750))
	must(t, os.WriteFile(filepath.Join(etc, "authz", "authz.json"), []byte(manifest.Authz), 0o640))
	// The Secret qnbd-metrics-web of deploy/README.md: TLS only, so that probes get through.
	must(t, os.MkdirAll(filepath.Join(etc, "web"), 0o750))
	must(t, os.WriteFile(filepath.Join(etc, "web", "web.yml"), []byte(fmt.Sprintf(
		"tls_server_config:\n  cert_file: %s/tls/server-cert.pem\n  key_file: %s/tls/server-key.pem\n", etc, etc)), 0o640))
	img := newQcow2(t, root, "1M", "")

	nbd, metrics := freeAddr(t), freeAddr(t)
	_, nbdPort, _ := net.SplitHostPort(nbd)
	var args []string
	for i, a := range manifest.Args {
		switch {
		case a == "0.0.0.0" && i > 0 && manifest.Args[i-1] == "-b":
			a = "127.0.0.1"
		case a == "10809" && i > 0 && manifest.Args[i-1] == "-p":
			a = nbdPort
		case a == "--metrics-addr=0.0.0.0:9810":
			a = "--metrics-addr=" + metrics
		}
		a = strings.NewReplacer("/etc/qnbd/", etc+"/", "/var/lib/qnbd/disk.qcow2", img).Replace(a)
		args = append(args, a)
	}
	s := startExample(t, args, nbd, metrics)

	// The kubelet's HTTPS probes: no certificate check, no client certificate, no password.
	probe := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := probe.Get("https://" + metrics + "/readyz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && string(body) == "ready\n" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("HTTPS readiness probe never passed: %v", err)
		}
	}
	if resp, err := probe.Get("https://" + metrics + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("HTTPS liveness probe: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	s.requireAdmission(map[string]bool{clients["hv"]: true, clients["backup"]: true, clients["intruder"]: false, "": false})
}

// pythonYAML is the interpreter with Debian's python3-yaml (a pyenv shim earlier in PATH may
// lack it).
func pythonYAML() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return "python3"
}
