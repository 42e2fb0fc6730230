// Tests of the nftables example: nft itself checks it (nft -c, in a network namespace of the
// test's own, so it needs no privileges and touches no real firewall), and it guards the
// ports the other deployment files use.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const nftExample = "nftables/qnbd.nft"

// nftCheck runs `nft -c -f path` inside a new user and network namespace.
func nftCheck(t *testing.T, path string) (string, error) {
	t.Helper()
	nft, err := exec.LookPath("nft")
	if err != nil {
		nft = "/usr/sbin/nft" // Debian's nftables; /usr/sbin is often not in a user's PATH
	}
	return run(".", nil, "unshare", "--user", "--map-root-user", "--net", nft, "-c", "-f", path)
}

func TestNftablesExampleChecks(t *testing.T) {
	out, err := nftCheck(t, nftExample)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("nft -c -f %s: %v\n%s", nftExample, err, out)
	}
	raw, err := os.ReadFile(nftExample)
	if err != nil {
		t.Fatal(err)
	}
	// The ports of the Containerfile, the k8s base and the systemd examples (9810, 9811).
	for _, rule := range []string{"tcp dport 10809 counter reject", "tcp dport 9810-9819 counter drop"} {
		if !strings.Contains(string(raw), rule) {
			t.Errorf("%s lacks %q", nftExample, rule)
		}
	}
	// nft -c must be able to fail.
	bad := filepath.Join(t.TempDir(), "bad.nft")
	if err := os.WriteFile(bad, []byte(strings.Replace(string(raw), "counter drop", "counter dorp", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := nftCheck(t, bad); err == nil {
		t.Errorf("nft -c accepted a misspelt verdict:\n%s", out)
	}
}
