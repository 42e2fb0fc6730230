// --metrics-web-config at the command line: a bad file stops the start with one line and
// exit 1 before any image is opened or any socket listens.
package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadMetricsWebConfigFailsAtStart(t *testing.T) {
	dir := t.TempDir()
	img := image(t, 1<<20)
	stamp := bytes.Repeat([]byte("qnbd"), 128)
	if err := os.WriteFile(img, stamp, 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sock := filepath.Join(dir, "s")
	for _, tc := range []struct {
		name, file, want string
	}{
		{"absent file", filepath.Join(dir, "absent.yml"), "no such file or directory"},
		{"unknown key", write("typo.yml", "tls_server_config:\n  cert_file: a\n  key_file: b\nbasic_auth_user: {}\n"), "field basic_auth_user not found"},
		{"missing certificate", write("nocert.yml", "tls_server_config:\n  cert_file: "+dir+"/x.crt\n  key_file: "+dir+"/x.key\n"), "x.crt"},
		{"plain-text password", write("plain.yml", "basic_auth_users:\n  prometheus: hunter2\n"), "bcrypt"},
	} {
		cmd := exec.Command(qnbdBin, "-k", sock, "--metrics-addr", "127.0.0.1:0", "--metrics-web-config", tc.file, img)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("%s: %v, want exit 1", tc.name, err)
		}
		s := stderr.String()
		if strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "qnbd: --metrics-web-config "+tc.file+": ") ||
			!strings.Contains(s, tc.want) {
			t.Errorf("%s: stderr %q, want one line naming the flag, the file and %q", tc.name, s, tc.want)
		}
		if _, err := os.Stat(sock); err == nil {
			t.Errorf("%s: the NBD socket was created before the failure", tc.name)
		}
	}
	if got, err := os.ReadFile(img); err != nil || !bytes.Equal(got, stamp) {
		t.Errorf("image changed: %v", err)
	}
}
