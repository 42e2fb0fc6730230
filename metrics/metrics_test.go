// Tests of registry construction: pre-initialised series, export labels, enum coverage.
package metrics

import (
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/qnbd/qnbd/internal/buildinfo"
	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

// TestSeriesExistAtZero checks that Export creates every label combination of its export at
// zero, so rate() and alerts have a series before the first event.
func TestSeriesExistAtZero(t *testing.T) {
	m := New(Options{Version: "v1"})
	perExport := map[string]int{
		"qnbd_qcow2_clusters_allocated_total":      6,
		"qnbd_qcow2_clusters_freed_total":          1,
		"qnbd_qcow2_reftable_grows_total":          1,
		"qnbd_qcow2_reftable_clusters":             1,
		"qnbd_qcow2_l1_entries":                    1,
		"qnbd_qcow2_host_bytes":                    1,
		"qnbd_qcow2_allocation_duration_seconds":   1,
		"qnbd_qcow2_cache_requests_total":          4,
		"qnbd_qcow2_cache_evictions_total":         2,
		"qnbd_qcow2_flushes_total":                 1,
		"qnbd_qcow2_flush_duration_seconds":        1,
		"qnbd_qcow2_image_dirty":                   1,
		"qnbd_qcow2_image_corrupt":                 1,
		"qnbd_qcow2_bitmap_dirty_bytes":            0, // one per bitmap, once the engine names it
		"qnbd_qcow2_bitmap_store_duration_seconds": 1,
		"qnbd_qcow2_bitmaps_inconsistent":          1,
		"qnbd_nbd_requests_total":                  8 * 10,
		"qnbd_nbd_request_duration_seconds":        8,
		"qnbd_nbd_bytes_total":                     8,
		"qnbd_nbd_inflight_requests":               1,
		"qnbd_nbd_connections":                     1,
	}
	if len(perExport) != len(catalogue)-2 {
		t.Fatalf("test covers %d per-export families, catalogue has %d plus handshakes and build_info",
			len(perExport), len(catalogue)-2)
	}
	names := []string{"", "x", "y"}
	for exports := 0; exports <= len(names); exports++ {
		for fam, n := range perExport {
			got, err := testutil.GatherAndCount(m.Registry(), fam)
			if err != nil {
				t.Fatal(err)
			}
			if got != n*exports {
				t.Errorf("after %d exports, %s has %d series, want %d", exports, fam, got, n*exports)
			}
		}
		if got, _ := testutil.GatherAndCount(m.Registry(), "qnbd_nbd_handshakes_total"); got != int(server.NumHandshakeResults) {
			t.Errorf("qnbd_nbd_handshakes_total has %d series, want %d", got, server.NumHandshakeResults)
		}
		if exports < len(names) {
			if _, err := m.Export(names[exports]); err != nil {
				t.Fatal(err)
			}
		}
	}
	snap := takeSnapshot(t, m.Registry())
	for k, v := range snap {
		if strings.HasPrefix(k, "qnbd_build_info") {
			if v != 1 {
				t.Errorf("%s = %g, want 1", k, v)
			}
		} else if v != 0 {
			t.Errorf("%s = %g before any event, want 0", k, v)
		}
	}
}

func TestBuildInfo(t *testing.T) {
	m := New(Options{Version: "v1.2.3"})
	want := `# HELP qnbd_build_info ` + famBuildInfo.Help + `
# TYPE qnbd_build_info gauge
qnbd_build_info{goversion="` + runtime.Version() + `",version="v1.2.3"} 1
`
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "qnbd_build_info"); err != nil {
		t.Error(err)
	}
	// No configured version: the label is buildinfo.Version's fallback, never empty.
	fallback := buildinfo.Version("")
	if fallback == "" {
		t.Error("empty version fallback")
	}
	want = strings.Replace(want, `version="v1.2.3"`, `version="`+fallback+`"`, 1)
	if err := testutil.GatherAndCompare(New(Options{}).Registry(), strings.NewReader(want), "qnbd_build_info"); err != nil {
		t.Errorf("empty version: %v", err)
	}
	if got := labelValue("a\xffb"); got != "a\uFFFDb" {
		t.Errorf("labelValue = %q", got)
	}
}

func TestExportLabels(t *testing.T) {
	m := New(Options{})
	a1, err := m.Export("disk")
	if err != nil {
		t.Fatal(err)
	}
	a2, err := m.Export("disk")
	if err != nil || a1 != a2 {
		t.Fatalf("second Export(disk) = %p, %v; want the first value %p", a2, err, a1)
	}
	if a1.Name() != "disk" {
		t.Errorf("Name() = %q", a1.Name())
	}
	def, err := m.Export("")
	if err != nil {
		t.Fatal(err)
	}
	def.NBD().ConnOpened()
	if got := testutil.ToFloat64(m.connections.WithLabelValues(DefaultExportLabel)); got != 1 {
		t.Errorf("default export connections = %g, want 1", got)
	}
	if _, err := m.Export(DefaultExportLabel); !errors.Is(err, ErrExportLabel) {
		t.Errorf("Export(%q) after Export(\"\") = %v, want ErrExportLabel", DefaultExportLabel, err)
	}
	if _, err := m.Export("bad\xff"); !errors.Is(err, ErrExportLabel) {
		t.Errorf("Export(invalid UTF-8) = %v, want ErrExportLabel", err)
	}
}

// TestEnumCoverage fails when the engine or server gains an enum value this package would
// silently drop.
func TestEnumCoverage(t *testing.T) {
	for k := 0; k < 256; k++ {
		named := qcow2.AllocKind(k).String() != "unknown"
		if named != (k < numAllocKinds) {
			t.Errorf("AllocKind(%d) named=%v but numAllocKinds=%d", k, named, numAllocKinds)
		}
		named = qcow2.CacheKind(k).String() != "unknown"
		if named != (k < numCacheKinds) {
			t.Errorf("CacheKind(%d) named=%v but numCacheKinds=%d", k, named, numCacheKinds)
		}
	}
	for o := 0; o < 256; o++ {
		if named := server.Op(o).String() != "unknown"; named != (o < int(server.NumOps)) {
			t.Errorf("server.Op(%d) named=%v but NumOps=%d", o, named, server.NumOps)
		}
		if named := server.HandshakeResult(o).String() != "unknown"; named != (o < int(server.NumHandshakeResults)) {
			t.Errorf("server.HandshakeResult(%d) named=%v but NumHandshakeResults=%d", o, named, server.NumHandshakeResults)
		}
	}
}

func TestResultOf(t *testing.T) {
	seen := map[string]bool{}
	for errno := uint32(0); errno < 300; errno++ {
		r := resultOf(errno)
		if r >= numResults {
			t.Fatalf("resultOf(%d) = %d out of range", errno, r)
		}
		if r != resultOther {
			if seen[r.String()] {
				t.Errorf("two errnos map to %s", r)
			}
			seen[r.String()] = true
		}
	}
	if len(seen) != int(numResults)-1 {
		t.Errorf("%d distinct non-other results, want %d", len(seen), numResults-1)
	}
	if resultOf(^uint32(0)) != resultOther {
		t.Error("huge errno not other")
	}
}

// TestDocCatalogue fails when doc.go does not describe a family of the catalogue.
func TestDocCatalogue(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range Catalogue() {
		line := ""
		for _, l := range strings.Split(string(doc), "\n") {
			if fields := strings.Fields(strings.TrimPrefix(l, "//")); len(fields) > 2 && fields[0] == f.Name {
				line = l
			}
		}
		if line == "" {
			t.Errorf("doc.go catalogue has no row for %s", f.Name)
			continue
		}
		if !strings.Contains(line, " "+f.Type.String()+" ") {
			t.Errorf("doc.go row for %s does not say %s", f.Name, f.Type)
		}
		if !strings.Contains(line, strings.Join(f.Labels, ", ")) {
			t.Errorf("doc.go row for %s does not list labels %v", f.Name, f.Labels)
		}
	}
	for r := result(0); r < numResults; r++ {
		if !strings.Contains(string(doc), r.String()) {
			t.Errorf("doc.go does not mention result %s", r)
		}
	}
}
