// Test helpers: running tools, loading YAML through python3, the set of known metric names.
package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/metrics"
)

// run runs a command and returns its combined output and error.
func run(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.String(), err
}

// repoRoot is the module root (tests run in deploy/).
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod above deploy/: %v", err)
	}
	return root
}

// python picks the interpreter that has Debian's python3-yaml: /usr/bin/python3 when present
// (a pyenv shim earlier in PATH may lack the module), else python3 from PATH.
func python() string {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3"
	}
	return "python3"
}

const yamlToJSON = `
import json, sys, yaml
out = {}
for p in sys.argv[1:]:
    with open(p) as f:
        out[p] = list(yaml.safe_load_all(f))
json.dump(out, sys.stdout)
`

// loadYAML parses every document of every file and returns them by path, as generic JSON
// values (map[string]any, []any, string, float64, bool, nil).
func loadYAML(t *testing.T, paths ...string) map[string][]any {
	t.Helper()
	cmd := exec.Command(python(), append([]string{"-c", yamlToJSON}, paths...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("parsing YAML %v: %v\n%s", paths, err, stderr.String())
	}
	var docs map[string][]any
	if err := json.Unmarshal(out, &docs); err != nil {
		t.Fatal(err)
	}
	return docs
}

// knownMetrics is every sample name a qnbd scrape can contain: the metrics package's
// catalogue (with histogram suffixes), what a fresh registry actually gathers (the Go runtime
// and process collectors), and Prometheus's own per-target "up".
func knownMetrics(t *testing.T) map[string]bool {
	t.Helper()
	known := map[string]bool{"up": true}
	for _, f := range metrics.Catalogue() {
		for _, s := range f.Series() {
			known[s] = true
		}
	}
	m := metrics.New(metrics.Options{})
	if _, err := m.Export("x"); err != nil {
		t.Fatal(err)
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		name := mf.GetName()
		switch mf.GetType().String() {
		case "HISTOGRAM":
			known[name+"_bucket"], known[name+"_sum"], known[name+"_count"] = true, true, true
		case "SUMMARY":
			known[name], known[name+"_sum"], known[name+"_count"] = true, true, true
		default:
			known[name] = true
		}
	}
	return known
}

// knownLabels is every label name a qnbd series can carry: the catalogue's, the target
// labels Prometheus adds, and le for histogram buckets.
func knownLabels() map[string]bool {
	known := map[string]bool{"job": true, "instance": true, "le": true}
	for _, f := range metrics.Catalogue() {
		for _, l := range f.Labels {
			known[l] = true
		}
	}
	return known
}

// checkNames reports unknown metric and label names in one PromQL expression.
func checkNames(t *testing.T, where, expr string, knownM, knownL map[string]bool) {
	t.Helper()
	names, labels, err := promqlNames(expr)
	if err != nil {
		t.Errorf("%s: %v in %q", where, err, expr)
		return
	}
	if len(names) == 0 {
		t.Errorf("%s: no metric in %q", where, expr)
	}
	for _, n := range names {
		if !knownM[n] {
			t.Errorf("%s: metric %s is not in the metrics catalogue (expr %q)", where, n, expr)
		}
	}
	for _, l := range labels {
		if !knownL[l] {
			t.Errorf("%s: label %s is not a qnbd label (expr %q)", where, l, expr)
		}
	}
}

// str digs a string out of nested maps.
func str(v any, path ...string) string {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = m[p]
	}
	s, _ := v.(string)
	return s
}

// obj digs a map out of nested maps.
func obj(v any, path ...string) map[string]any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	m, _ := v.(map[string]any)
	return m
}

// list digs a slice out of nested maps.
func list(v any, path ...string) []any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	l, _ := v.([]any)
	return l
}
