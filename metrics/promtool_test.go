// Exposition check: after every hook has fired, a real scrape must pass promtool's lint.
package metrics

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func scrapeAfterEveryHook(t *testing.T) []byte {
	t.Helper()
	f := newFixture(t)
	for _, ex := range []*Export{f.a, f.b} {
		for _, c := range hookCalls(ex.Image(), ex.NBD(), f.server) {
			c.call()
		}
	}
	ts := httptest.NewServer(f.m.Handler(nil))
	defer ts.Close()
	resp, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	if problems, err := testutil.GatherAndLint(f.m.Registry()); err != nil || len(problems) != 0 {
		t.Errorf("GatherAndLint: %v %v", err, problems)
	}
	return body
}

// TestPromtoolCheckMetrics pipes a scrape through `promtool check metrics`, which parses the
// text format and lints names, types, help and units; any output fails the test.
func TestPromtoolCheckMetrics(t *testing.T) {
	body := scrapeAfterEveryHook(t)
	for _, want := range []string{"qnbd_qcow2_", "qnbd_nbd_", "qnbd_build_info", "go_", "process_"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Fatalf("scrape lacks %s series", want)
		}
	}
	out, err := promtool(body)
	if err != nil || len(out) != 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// TestPromtoolCatchesProblems shows the check above can fail: promtool must object to an
// exposition with a lint problem.
func TestPromtoolCatchesProblems(t *testing.T) {
	bad := "# HELP qnbd_bad_count a counter without _total\n# TYPE qnbd_bad_count counter\nqnbd_bad_count 1\n"
	out, err := promtool([]byte(bad))
	if err == nil && len(out) == 0 {
		t.Fatal("promtool accepted a counter without _total")
	}
	if !strings.Contains(string(out), "qnbd_bad_count") {
		t.Errorf("promtool output does not name the metric: %s", out)
	}
}

func promtool(exposition []byte) ([]byte, error) {
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	return cmd.CombinedOutput()
}
