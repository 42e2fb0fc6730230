// Tests of the systemd units: systemd-analyze verify and security, systemd-sysusers, and the
// hardening the units promise.
package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const (
	serviceUnit = "systemd/qnbd@.service"
	socketUnit  = "systemd/qnbd@.socket"
	unitBinary  = "/usr/local/bin/qnbd"
	// maxExposure is the highest `systemd-analyze security` score the service may have
	// (0 = fully locked down, 10 = unprotected; systemd calls <= 2 "OK").
	maxExposure = 2.0
)

// stageUnits copies the units into a temporary directory with ExecStart pointing at an
// executable that exists. systemd-analyze verify fails when the ExecStart binary is missing
// or not executable, and the tests must not install anything under /usr/local/bin, so the
// copy runs a stand-in at a temporary path; nothing else in the units is changed.
func stageUnits(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	standIn := filepath.Join(dir, "qnbd")
	if err := os.WriteFile(standIn, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	svc, err := os.ReadFile(serviceUnit)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(svc), "ExecStart="+unitBinary+" ") {
		t.Fatalf("%s: ExecStart does not run %s", serviceUnit, unitBinary)
	}
	staged := strings.ReplaceAll(string(svc), "ExecStart="+unitBinary+" ", "ExecStart="+standIn+" ")
	if err := os.WriteFile(filepath.Join(dir, "qnbd@.service"), []byte(staged), 0o644); err != nil {
		t.Fatal(err)
	}
	sock, err := os.ReadFile(socketUnit)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "qnbd@.socket"), sock, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// verify runs systemd-analyze verify on an instance of each template. verify exits 0 on
// unknown keys and unparsable values (it only logs them), so any output at all fails.
func verify(dir string, units ...string) (string, error) {
	args := []string{"verify"}
	for _, u := range units {
		args = append(args, filepath.Join(dir, u))
	}
	return run(dir, []string{"SYSTEMD_LOG_COLOR=0"}, "systemd-analyze", args...)
}

func TestSystemdVerify(t *testing.T) {
	dir := stageUnits(t)
	out, err := verify(dir, "qnbd@disk.service", "qnbd@disk.socket")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// TestSystemdVerifyCanFail shows verify's output is caught: a misspelt key must be reported.
func TestSystemdVerifyCanFail(t *testing.T) {
	dir := stageUnits(t)
	p := filepath.Join(dir, "qnbd@.service")
	svc, _ := os.ReadFile(p)
	bad := strings.Replace(string(svc), "NoNewPrivileges=yes", "NoNewPrivilege=yes", 1)
	if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := verify(dir, "qnbd@disk.service")
	if err == nil && !strings.Contains(out, "NoNewPrivilege") {
		t.Fatalf("verify did not report a misspelt key: %q", out)
	}
}

func TestSystemdSecurityExposure(t *testing.T) {
	if score := exposure(t, stageUnits(t)); score > maxExposure {
		t.Errorf("exposure %.1f > %.1f", score, maxExposure)
	}
}

// exposure runs systemd-analyze security on the staged qnbd@disk.service and returns its
// overall exposure level.
func exposure(t *testing.T, dir string) float64 {
	t.Helper()
	out, err := run(dir, []string{"SYSTEMD_LOG_COLOR=0"}, "systemd-analyze", "security", "--offline=true",
		"--no-pager", filepath.Join(dir, "qnbd@disk.service"))
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for qnbd@disk\.service: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	score, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security exposure: %.1f", score)
	if score > maxExposure {
		t.Logf("systemd-analyze security:\n%s", out)
	}
	return score
}

// unitSettings returns key=value lines of a unit file (later values of a key appended).
func unitSettings(t *testing.T, path string) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	kv := map[string][]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: not key=value: %q", path, line)
			continue
		}
		kv[k] = append(kv[k], v)
	}
	return kv
}

func TestSystemdHardening(t *testing.T) {
	kv := unitSettings(t, serviceUnit)
	want := map[string]string{
		"ProtectSystem":           "strict",
		"ReadWritePaths":          "/var/lib/qnbd",
		"NoNewPrivileges":         "yes",
		"PrivateTmp":              "yes",
		"ProtectHome":             "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectKernelLogs":       "yes",
		"ProtectControlGroups":    "yes",
		"RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
		"CapabilityBoundingSet":   "",
		"SystemCallFilter":        "@system-service",
		"MemoryDenyWriteExecute":  "yes",
		"LockPersonality":         "yes",
		"User":                    "qnbd",
		"KillSignal":              "SIGTERM",
		"EnvironmentFile":         "-/etc/qnbd/%i.conf",
		"SystemCallArchitectures": "native",
		"RestrictNamespaces":      "yes",
		"RestrictSUIDSGID":        "yes",
		"PrivateDevices":          "yes",
		"ProtectClock":            "yes",
		"RestrictRealtime":        "yes",
		"ProtectHostname":         "yes",
		"SystemCallErrorNumber":   "EPERM",
		"UMask":                   "0077",
		"Restart":                 "on-failure",
		"StateDirectory":          "qnbd",
		"ProtectProc":             "invisible",
		"KeyringMode":             "private",
		"AmbientCapabilities":     "",
		"DevicePolicy":            "closed",
		"PrivateMounts":           "yes",
		"RemoveIPC":               "yes",
		"Type":                    "exec",
		"ExecStart":               "",
		"TimeoutStopSec":          "",
		"Environment":             "QNBD_ARGS=",
		"StateDirectoryMode":      "0750",
		"Group":                   "qnbd",
		"KillMode":                "mixed",
		"LimitNOFILE":             "65536",
		"RestartSec":              "2s",
		"Description":             "",
		"Documentation":           "",
		"After":                   "network.target",
		"WantedBy":                "multi-user.target",
	}
	for k, v := range want {
		got, ok := kv[k]
		if !ok {
			t.Errorf("%s: %s is not set", serviceUnit, k)
			continue
		}
		if v != "" && got[0] != v {
			t.Errorf("%s: %s=%s, want %s", serviceUnit, k, got[0], v)
		}
	}
	exec := kv["ExecStart"][0]
	for _, part := range []string{"-x %i", "$QNBD_ARGS", "/var/lib/qnbd/%i.qcow2"} {
		if !strings.Contains(exec, part) {
			t.Errorf("ExecStart lacks %q: %s", part, exec)
		}
	}
	// Stopping flushes the image: the stop timeout must leave it time.
	if d := kv["TimeoutStopSec"][0]; d != "90s" && d != "120s" {
		t.Errorf("TimeoutStopSec=%s, want a generous flush window (90s or 120s)", d)
	}
	sock := unitSettings(t, socketUnit)
	if l := sock["ListenStream"]; len(l) != 1 || !strings.Contains(l[0], "%i") {
		t.Errorf("%s: ListenStream=%v, want one per-instance socket", socketUnit, l)
	}
	if a := sock["Accept"]; len(a) != 1 || a[0] != "no" {
		t.Errorf("%s: Accept=%v, want no (qnbd takes the listening socket via LISTEN_FDS)", socketUnit, a)
	}
}

func TestSysusers(t *testing.T) {
	path, err := filepath.Abs("systemd/qnbd.sysusers")
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(".", nil, "systemd-sysusers", "--dry-run", "--root="+t.TempDir(), path)
	if err != nil || !strings.Contains(out, "Creating user 'qnbd'") {
		t.Fatalf("systemd-sysusers: %v\n%s", err, out)
	}
	for _, bad := range []string{"fail", "Trailing", "Unknown", "ignoring"} {
		if strings.Contains(out, bad) {
			t.Errorf("systemd-sysusers complained: %s", out)
		}
	}
}
