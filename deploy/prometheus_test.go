// Tests of the Prometheus alert rules: promtool check and unit tests, coverage of every
// alert, and metric names against the metrics catalogue.
package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	rulesFile     = "prometheus/qnbd-rules.yml"
	rulesTestFile = "prometheus/qnbd-rules.test.yml"
)

func TestPromtoolCheckRules(t *testing.T) {
	out, err := run(".", nil, "promtool", "check", "rules", rulesFile)
	if err != nil || !strings.Contains(out, "SUCCESS") || strings.Contains(out, "WARNING") {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

func TestPromtoolTestRules(t *testing.T) {
	out, err := run(".", nil, "promtool", "test", "rules", rulesTestFile)
	if err != nil || !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
}

// TestPromtoolTestRulesCanFail breaks one expected annotation in a copy of the tests and
// requires promtool to notice, so the test above is not vacuous.
func TestPromtoolTestRulesCanFail(t *testing.T) {
	dir := t.TempDir()
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(rulesTestFile)
	if err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(string(tests), `summary: "qcow2 image of export disk is marked corrupt"`,
		`summary: "qcow2 image of export disk is fine"`, 1)
	if broken == string(tests) {
		t.Fatal("mutation target not found in the rule tests")
	}
	if err := os.WriteFile(filepath.Join(dir, "qnbd-rules.yml"), rules, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "t.yml"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(dir, nil, "promtool", "test", "rules", "t.yml")
	if err == nil || !strings.Contains(out, "QnbdImageCorrupt") {
		t.Fatalf("promtool accepted a wrong expectation: %v\n%s", err, out)
	}
}

// TestEveryAlertTested requires each alert to be tested both firing and not firing.
func TestEveryAlertTested(t *testing.T) {
	docs := loadYAML(t, rulesFile, rulesTestFile)
	var alerts []string
	for _, g := range list(docs[rulesFile][0], "groups") {
		for _, r := range list(g, "rules") {
			if a := str(r, "alert"); a != "" {
				alerts = append(alerts, a)
			}
		}
	}
	if len(alerts) < 8 {
		t.Fatalf("only %d alerts in %s", len(alerts), rulesFile)
	}
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range list(docs[rulesTestFile][0], "tests") {
		for _, at := range list(tc, "alert_rule_test") {
			name := str(at, "alertname")
			if len(list(at, "exp_alerts")) > 0 {
				firing[name] = true
			} else {
				quiet[name] = true
			}
		}
	}
	for _, a := range alerts {
		if !firing[a] {
			t.Errorf("alert %s is never tested firing", a)
		}
		if !quiet[a] {
			t.Errorf("alert %s is never tested not firing", a)
		}
	}
}

// TestRulesUseKnownMetrics checks every rule expression against the metrics catalogue.
func TestRulesUseKnownMetrics(t *testing.T) {
	docs := loadYAML(t, rulesFile)
	knownM, knownL := knownMetrics(t), knownLabels()
	n := 0
	for _, g := range list(docs[rulesFile][0], "groups") {
		for _, r := range list(g, "rules") {
			checkNames(t, str(r, "alert"), str(r, "expr"), knownM, knownL)
			if str(r, "labels", "severity") == "" {
				t.Errorf("%s has no severity label", str(r, "alert"))
			}
			if str(r, "annotations", "summary") == "" || str(r, "annotations", "description") == "" {
				t.Errorf("%s lacks a summary or description", str(r, "alert"))
			}
			n++
		}
	}
	if n == 0 {
		t.Fatal("no rules found")
	}
}
