// Tests of the TLS deployment under systemd: the drop-in passes systemd-analyze verify and
// security with the unit, the example environment file names objects that exist and paths
// the drop-in expects, the example web config is accepted by the metrics package once its
// placeholder is filled in, and the example authz list is in QEMU's authz-list-file format.
package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/qnbd/qnbd/internal/testing/testpki"
	"github.com/qnbd/qnbd/metrics"
)

const (
	tlsDropIn      = "systemd/qnbd@.service.d/tls.conf"
	tlsConfExample = "systemd/qnbd-tls.conf.example"
	webExample     = "systemd/qnbd-web.yml.example"
	authzExample   = "systemd/qnbd-authz.json.example"
	tlsDir         = "/etc/qnbd/tls"
)

// stageTLSUnits is stageUnits plus the TLS drop-in in qnbd@.service.d/, where systemd (and
// systemd-analyze verify) look for it.
func stageTLSUnits(t *testing.T) string {
	t.Helper()
	dir := stageUnits(t)
	dropIn, err := os.ReadFile(tlsDropIn)
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(dir, "qnbd@.service.d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "tls.conf"), dropIn, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestSystemdTLSDropInVerifies(t *testing.T) {
	dir := stageTLSUnits(t)
	out, err := verify(dir, "qnbd@disk.service", "qnbd@disk.socket")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify with the TLS drop-in: %v\n%s", err, out)
	}
	if score := exposure(t, dir); score > maxExposure {
		t.Errorf("exposure with the TLS drop-in %.1f > %.1f", score, maxExposure)
	}
}

// TestSystemdTLSDropInVerifyCanFail shows verify reads the staged drop-in: a misspelt key in
// it must be reported.
func TestSystemdTLSDropInVerifyCanFail(t *testing.T) {
	dir := stageTLSUnits(t)
	p := filepath.Join(dir, "qnbd@.service.d", "tls.conf")
	raw, _ := os.ReadFile(p)
	bad := strings.Replace(string(raw), "ExecReload=", "ExecReloads=", 1)
	if bad == string(raw) {
		t.Fatal("mutation target not found")
	}
	if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := verify(dir, "qnbd@disk.service")
	if err == nil && !strings.Contains(out, "ExecReloads") {
		t.Fatalf("verify did not report a misspelt key in the drop-in: %q", out)
	}
}

func TestSystemdTLSDropInReloadsWithSIGHUP(t *testing.T) {
	kv := unitSettings(t, tlsDropIn)
	if r := kv["ExecReload"]; len(r) != 1 || r[0] != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload=%v, want /bin/kill -HUP $MAINPID", r)
	}
	// The environment file carries the TLS flags: the drop-in makes it required ("-" dropped).
	if e := kv["EnvironmentFile"]; len(e) != 2 || e[0] != "" || e[1] != "/etc/qnbd/%i.conf" {
		t.Errorf("EnvironmentFile=%v, want a reset and then the required /etc/qnbd/%%i.conf", e)
	}
	asserted := false
	for _, a := range kv["AssertPathExists"] {
		asserted = asserted || a == tlsDir+"/server-key.pem"
	}
	if !asserted {
		t.Errorf("AssertPathExists=%v does not check %s/server-key.pem", kv["AssertPathExists"], tlsDir)
	}
}

// qemuOptions parses a QEMU option string "type,key=value,..." (no ",," escapes) into its
// first field and its keys.
func qemuOptions(s string) (string, map[string]string) {
	fields := strings.Split(s, ",")
	kv := map[string]string{}
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(f, "=")
		kv[k] = v
	}
	return fields[0], kv
}

// tlsArgs is what a qnbd command line says about TLS.
type tlsArgs struct {
	objects              map[string]map[string]string // by id; "qom-type" holds the type
	tlsCreds, tlsAuthz   string
	bind, webConfig      string
	metricsAddr, operand string
}

// parseTLSArgs reads the TLS-related flags from a qnbd argument list (both "--flag value" and
// "--flag=value"). Every flag is taken to have a value except -t: enough for the examples.
func parseTLSArgs(args []string) tlsArgs {
	a := tlsArgs{objects: map[string]map[string]string{}}
	for i := 0; i < len(args); i++ {
		flag, val, inline := strings.Cut(args[i], "=")
		if !strings.HasPrefix(flag, "-") {
			a.operand = args[i]
			continue
		}
		if !inline && i+1 < len(args) && flag != "-t" {
			val = args[i+1]
			i++
		}
		switch flag {
		case "--object":
			typ, kv := qemuOptions(val)
			kv["qom-type"] = typ
			a.objects[kv["id"]] = kv
		case "--tls-creds":
			a.tlsCreds = val
		case "--tls-authz":
			a.tlsAuthz = val
		case "-b", "--bind":
			a.bind = val
		case "--metrics-addr":
			a.metricsAddr = val
		case "--metrics-web-config":
			a.webConfig = val
		}
	}
	return a
}

// tlsArgsProblems checks that the flags form a TLS setup qemu-nbd would accept: x509
// credentials for the server endpoint with peer verification, an authz object that exists,
// an absolute authz-list-file path, and a secured metrics endpoint. (Where to bind is the
// caller's check: a pod binds every address of its own.)
func tlsArgsProblems(a tlsArgs) []string {
	var probs []string
	creds := a.objects[a.tlsCreds]
	switch {
	case a.tlsCreds == "" || creds == nil:
		probs = append(probs, "--tls-creds names no --object")
	case creds["qom-type"] != "tls-creds-x509" || creds["endpoint"] != "server" || creds["dir"] == "":
		probs = append(probs, "--tls-creds object is not tls-creds-x509 with endpoint=server and dir=")
	case creds["verify-peer"] == "off" || creds["verify-peer"] == "no":
		probs = append(probs, "verify-peer is off: client certificates would not be checked")
	}
	authz := a.objects[a.tlsAuthz]
	if a.tlsAuthz == "" || authz == nil {
		probs = append(probs, "--tls-authz names no --object")
	} else if authz["qom-type"] == "authz-list-file" && !filepath.IsAbs(authz["filename"]) {
		probs = append(probs, "authz-list-file filename is not absolute")
	}
	if a.metricsAddr != "" && a.webConfig == "" {
		probs = append(probs, "--metrics-addr without --metrics-web-config")
	}
	return probs
}

func TestTLSConfExampleIsConsistent(t *testing.T) {
	kv := unitSettings(t, tlsConfExample)
	if len(kv["QNBD_ARGS"]) != 1 {
		t.Fatalf("%s: want one QNBD_ARGS line, have %v", tlsConfExample, kv["QNBD_ARGS"])
	}
	a := parseTLSArgs(strings.Fields(kv["QNBD_ARGS"][0]))
	for _, p := range tlsArgsProblems(a) {
		t.Errorf("%s: %s", tlsConfExample, p)
	}
	if a.bind == "" || a.bind == "0.0.0.0" || a.bind == "::" {
		t.Errorf("%s: -b %q: bind to the address clients use, not every address", tlsConfExample, a.bind)
	}
	if d := a.objects[a.tlsCreds]["dir"]; d != tlsDir {
		t.Errorf("%s: dir=%s, but the drop-in asserts %s", tlsConfExample, d, tlsDir)
	}
	if a.webConfig != "/etc/qnbd/web.yml" {
		t.Errorf("%s: --metrics-web-config=%s, want /etc/qnbd/web.yml (what the README installs)", tlsConfExample, a.webConfig)
	}
	// The checks catch what they claim to.
	for name, mutate := range map[string]func(a *tlsArgs){
		"creds id mismatch": func(a *tlsArgs) { a.tlsCreds = "tls1" },
		"authz id mismatch": func(a *tlsArgs) { a.tlsAuthz = "nobody" },
		"verify-peer off":   func(a *tlsArgs) { a.objects[a.tlsCreds]["verify-peer"] = "off" },
		"relative list":     func(a *tlsArgs) { a.objects[a.tlsAuthz]["filename"] = "authz.json" },
		"client endpoint":   func(a *tlsArgs) { a.objects[a.tlsCreds]["endpoint"] = "client" },
		"open metrics":      func(a *tlsArgs) { a.webConfig = "" },
	} {
		b := parseTLSArgs(strings.Fields(kv["QNBD_ARGS"][0]))
		mutate(&b)
		if len(tlsArgsProblems(b)) == 0 {
			t.Errorf("%s: not detected", name)
		}
	}
}

// TestWebConfigExampleValidates fills the example's placeholder and certificate paths and
// hands it to the metrics package, which must accept it; the example as shipped must be
// refused, so that nobody serves it with its placeholder.
func TestWebConfigExampleValidates(t *testing.T) {
	raw, err := os.ReadFile(webExample)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ca := testpki.NewCA(t, "example CA")
	ca.WriteCert(t, filepath.Join(dir, "ca-cert.pem"))
	srv := ca.Server(t, "localhost")
	srv.WriteCert(t, filepath.Join(dir, "server-cert.pem"))
	srv.WriteKey(t, filepath.Join(dir, "server-key.pem"))
	hash, err := bcrypt.GenerateFromPassword([]byte("example"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	shipped := strings.ReplaceAll(string(raw), tlsDir+"/", dir+"/")
	if shipped == string(raw) {
		t.Fatalf("%s does not use %s", webExample, tlsDir)
	}
	filled := strings.Replace(shipped, "REPLACE_WITH_BCRYPT_HASH", string(hash), 1)
	if filled == shipped {
		t.Fatalf("%s has no REPLACE_WITH_BCRYPT_HASH placeholder", webExample)
	}
	for _, tc := range []struct {
		name, body string
		ok         bool
	}{{"filled in", filled, true}, {"as shipped", shipped, false}} {
		p := filepath.Join(dir, tc.name+".yml")
		if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		err := metrics.WebConfigFile(p).Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%s: Validate = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// authzList is QEMU's authz-list-file format (the QAuthZListRule list of qapi/authz.json).
type authzList struct {
	Policy string `json:"policy"`
	Rules  []struct {
		Match  string `json:"match"`
		Policy string `json:"policy"`
		Format string `json:"format"`
	} `json:"rules"`
}

// authzProblems checks an authz-list-file document: known keys only, deny by default, and
// every rule well formed.
func authzProblems(raw []byte) []string {
	var l authzList
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return []string{err.Error()}
	}
	var probs []string
	if l.Policy != "deny" {
		probs = append(probs, "default policy is not deny")
	}
	if len(l.Rules) == 0 {
		probs = append(probs, "no rules: nobody may connect")
	}
	for i, r := range l.Rules {
		if r.Match == "" || (r.Policy != "allow" && r.Policy != "deny") ||
			(r.Format != "" && r.Format != "exact" && r.Format != "glob") {
			probs = append(probs, fmt.Sprintf("rule %d is malformed: %+v", i, r))
		}
	}
	return probs
}

func TestAuthzExampleIsQEMUListFormat(t *testing.T) {
	raw, err := os.ReadFile(authzExample)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range authzProblems(raw) {
		t.Errorf("%s: %s", authzExample, p)
	}
	for name, bad := range map[string]string{
		"allow by default": strings.Replace(string(raw), `"policy": "deny"`, `"policy": "allow"`, 1),
		"unknown key":      strings.Replace(string(raw), `"format"`, `"fmt"`, 1),
		"bad format":       strings.Replace(string(raw), `"glob"`, `"regex"`, 1),
	} {
		if bad == string(raw) {
			t.Fatalf("%s: mutation target not found", name)
		}
		if len(authzProblems([]byte(bad))) == 0 {
			t.Errorf("%s: not detected", name)
		}
	}
}
