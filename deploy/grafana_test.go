// Tests of the Grafana dashboard: it parses, its PromQL is valid (checked by promtool) and
// names only metrics and labels the metrics package defines.
package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/metrics"
)

const dashboardFile = "grafana/qnbd.json"

type dashboard struct {
	Title      string `json:"title"`
	UID        string `json:"uid"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int                       `json:"id"`
	Type       string                    `json:"type"`
	Title      string                    `json:"title"`
	Datasource map[string]any            `json:"datasource"`
	GridPos    *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		Expr       string         `json:"expr"`
		RefID      string         `json:"refId"`
		Datasource map[string]any `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels flattens rows.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// grafanaVars replaces the dashboard's variables with values PromQL accepts.
var grafanaVars = strings.NewReplacer(
	"${__rate_interval}", "5m", "$__rate_interval", "5m",
	"${__interval}", "1m", "$__interval", "1m",
	"${__range}", "1h", "$__range", "1h",
	"${job}", ".*", "$job", ".*",
	"${instance}", ".*", "$instance", ".*",
	"${export}", ".*", "$export", ".*",
)

type dashExpr struct{ where, expr string }

func dashboardExprs(t *testing.T, d dashboard) []dashExpr {
	t.Helper()
	var out []dashExpr
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			expr := grafanaVars.Replace(tg.Expr)
			if strings.Contains(expr, "$") {
				t.Errorf("panel %q target %s: unknown variable in %q", p.Title, tg.RefID, tg.Expr)
			}
			out = append(out, dashExpr{fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), expr})
		}
	}
	return out
}

func TestDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Error("dashboard needs a title and a uid")
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" {
		t.Errorf("no datasource variable of type datasource: %v", vars)
	}
	if vars["export"] != "query" {
		t.Errorf("no export query variable: %v", vars)
	}
	ids := map[int]string{}
	targets := 0
	for _, p := range allPanels(d.Panels) {
		if prev, dup := ids[p.ID]; dup || p.ID == 0 {
			t.Errorf("panel %q: id %d missing or shared with %q", p.Title, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no gridPos", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if uid, _ := p.Datasource["uid"].(string); uid != "${datasource}" {
			t.Errorf("panel %q datasource uid %q, want ${datasource}", p.Title, uid)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, tg := range p.Targets {
			targets++
			if !strings.Contains(tg.Expr, "$job") && !strings.Contains(tg.Expr, "${job}") {
				t.Errorf("panel %q target %s ignores the job variable: %q", p.Title, tg.RefID, tg.Expr)
			}
		}
	}
	if targets < 10 {
		t.Errorf("only %d queries in the dashboard", targets)
	}
}

// TestDashboardUsesKnownMetrics checks every query and variable of the dashboard against the
// metrics catalogue, and that the dashboard shows what an operator needs.
func TestDashboardUsesKnownMetrics(t *testing.T) {
	d := loadDashboard(t)
	knownM, knownL := knownMetrics(t), knownLabels()
	used := map[string]bool{}
	for _, e := range dashboardExprs(t, d) {
		checkNames(t, e.where, e.expr, knownM, knownL)
		names, _, _ := promqlNames(e.expr)
		for _, n := range names {
			used[n] = true
		}
	}
	// Template variables use Grafana's label_values(metric{...}, label).
	labelValues := regexp.MustCompile(`^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := str(v.Query, "query")
		if s, ok := v.Query.(string); ok {
			q = s
		}
		m := labelValues.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q)
			continue
		}
		checkNames(t, "variable "+v.Name, grafanaVars.Replace(m[1]), knownM, knownL)
		if !knownL[m[2]] {
			t.Errorf("variable %s: label %s is not a qnbd label", v.Name, m[2])
		}
	}
	for _, f := range metrics.Catalogue() {
		if f.Name == "qnbd_build_info" {
			continue // used by the variables, not a panel
		}
		shown := false
		for _, s := range f.Series() {
			shown = shown || used[s]
		}
		if !shown {
			t.Errorf("dashboard shows no panel for %s", f.Name)
		}
	}
}

// TestDashboardPromQLValid has promtool parse every query, as recording rules.
func TestDashboardPromQLValid(t *testing.T) {
	exprs := dashboardExprs(t, loadDashboard(t))
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(e.expr) // a JSON string is a valid YAML double-quoted scalar
		fmt.Fprintf(&b, "      - record: dashboard:expr_%d\n        expr: %s\n", i, q)
	}
	path := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(".", nil, "promtool", "check", "rules", path)
	if err != nil || !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", len(exprs))) {
		t.Fatalf("promtool rejected dashboard queries: %v\n%s", err, out)
	}
}

// TestDashboardShowsRefusedHandshakes requires a panel with the refused-handshake results
// the QnbdHandshakesRefused alert watches.
func TestDashboardShowsRefusedHandshakes(t *testing.T) {
	found := false
	for _, e := range dashboardExprs(t, loadDashboard(t)) {
		found = found || strings.Contains(e.expr, "qnbd_nbd_handshakes_total") &&
			strings.Contains(e.expr, `result=~"tls_required|tls_failed|authz_denied"`)
	}
	if !found {
		t.Error("no panel shows handshakes refused with tls_required, tls_failed or authz_denied")
	}
}

// TestDashboardPanelsDoNotOverlap checks the grid: no two panels share a cell and every
// panel fits the 24-column width.
func TestDashboardPanelsDoNotOverlap(t *testing.T) {
	type cell struct{ x, y int }
	owner := map[cell]string{}
	for _, p := range allPanels(loadDashboard(t).Panels) {
		g := p.GridPos
		if g == nil {
			continue
		}
		if g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q is outside the 24 columns: %+v", p.Title, *g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if prev, ok := owner[cell{x, y}]; ok {
					t.Errorf("panels %q and %q overlap at (%d,%d)", prev, p.Title, x, y)
					break
				}
				owner[cell{x, y}] = p.Title
			}
		}
	}
}
