// A real Prometheus server scrapes qnbd's --metrics-addr every second while NBD writes grow
// a 512-byte-cluster image by tens of MiB: allocation rates, reftable growth (checked
// against the image header on disk) and request counters (checked against the requests the
// test sent) must come out of Prometheus's query API; promtool accepts the live exposition.
// The test waits for scrapes it needs (one before, one amid and one after the writes, seen
// in Prometheus's targets API) instead of assuming when they land.
package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/syncbuf"
)

// prometheus is a running Prometheus server.
type prometheus struct {
	t    *testing.T
	addr string
}

// startPrometheus runs Prometheus scraping target (host:port) every second, with its
// storage in a temporary directory, and stops it at the end of the test.
func startPrometheus(t *testing.T, target string) *prometheus {
	t.Helper()
	return startPrometheusJobs(t, fmt.Sprintf(`  - job_name: qnbd
    static_configs:
      - targets: [%q]
`, target))
}

// startPrometheusJobs is startPrometheus with the scrape_configs list given as YAML (list
// items indented by two spaces), each job scraped every second.
func startPrometheusJobs(t *testing.T, scrapeConfigs string) *prometheus {
	t.Helper()
	dir := t.TempDir()
	cfg := `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
` + scrapeConfigs
	cfgPath := filepath.Join(dir, "prometheus.yml")
	must(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))
	p := &prometheus{t: t, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))}
	out := &syncbuf.Buffer{}
	cmd := exec.Command("prometheus", "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+p.addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	must(t, cmd.Start())
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out)
		}
	})
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + p.addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		select {
		case <-exited:
			t.Fatalf("prometheus exited before it was ready:\n%s", out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 60s: %v\n%s", err, out)
		}
	}
}

// sample is one series of an instant query's result.
type sample struct {
	Metric map[string]string
	Value  float64
}

// promDeadline bounds each wait for Prometheus: a few dozen scrapes, so that a loaded
// machine where some scrapes time out still gets there.
const promDeadline = 60 * time.Second

// api GETs path (with its query string) from Prometheus's HTTP API and decodes the data field
// of a successful answer into data, failing the test otherwise.
func (p *prometheus) api(path string, data any) {
	p.t.Helper()
	resp, err := http.Get("http://" + p.addr + path)
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
		p.t.Fatalf("%s: %v %s %s", path, err, r.Error, body)
	}
	if err := json.Unmarshal(r.Data, data); err != nil {
		p.t.Fatalf("%s: %v %s", path, err, body)
	}
}

// query evaluates an instant PromQL query at time at, or now if at is zero.
func (p *prometheus) query(q string, at time.Time) []sample {
	p.t.Helper()
	path := "/api/v1/query?query=" + url.QueryEscape(q)
	if !at.IsZero() {
		path += "&time=" + strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)
	}
	var d struct {
		Result []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	p.api(path, &d)
	var out []sample
	for _, s := range d.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			p.t.Fatalf("query %q: value %v: %v", q, s.Value, err)
		}
		out = append(out, sample{s.Metric, v})
	}
	return out
}

// scrapeTarget is Prometheus's view of its one scrape target (/api/v1/targets).
type scrapeTarget struct {
	Health     string    `json:"health"`
	LastScrape time.Time `json:"lastScrape"`
	LastError  string    `json:"lastError"`
}

// target returns the state of the one active scrape target (the zero value before Prometheus
// has loaded it).
func (p *prometheus) target() scrapeTarget {
	p.t.Helper()
	var d struct {
		ActiveTargets []scrapeTarget `json:"activeTargets"`
	}
	p.api("/api/v1/targets?state=active", &d)
	switch len(d.ActiveTargets) {
	case 0:
		return scrapeTarget{}
	case 1:
		return d.ActiveTargets[0]
	}
	p.t.Fatalf("%d scrape targets, want 1: %+v", len(d.ActiveTargets), d.ActiveTargets)
	return scrapeTarget{}
}

// waitScrape waits for a successful scrape that started after t and returns its start (the
// timestamp of its samples). The API reports a scrape a moment before its samples are
// queryable, so a query that needs them still polls.
func (p *prometheus) waitScrape(t time.Time) time.Time {
	p.t.Helper()
	var last scrapeTarget
	for deadline := time.Now().Add(promDeadline); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		last = p.target()
		if last.Health == "up" && last.LastScrape.After(t) {
			return last.LastScrape
		}
	}
	p.t.Fatalf("no successful scrape after %v within %v; last: %+v", t.Format(time.RFC3339Nano), promDeadline, last)
	return time.Time{}
}

// waitPositive polls q, evaluated at time at (now if zero), until it gives one series with
// a value above 0 (a failed scrape makes series stale for a moment) and fails the test if it
// never does.
func (p *prometheus) waitPositive(q string, at time.Time) {
	p.t.Helper()
	var last []sample
	for deadline := time.Now().Add(promDeadline); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		last = p.query(q, at)
		if len(last) == 1 && last[0].Value > 0 {
			return
		}
	}
	p.t.Errorf("query %q at %v = %+v, want one series > 0 (target: %+v)", q, at, last, p.target())
}

// waitFor polls q until it gives one series equal to want (a failed scrape makes series
// stale for a moment) and fails the test if it never does.
func (p *prometheus) waitFor(q string, want float64) {
	p.t.Helper()
	var last []sample
	for deadline := time.Now().Add(promDeadline); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		last = p.query(q, time.Time{})
		if len(last) == 1 && last[0].Value == want {
			return
		}
	}
	p.t.Errorf("query %q = %+v, want one series = %v (target: %+v)", q, last, want, p.target())
}

// reftableOnDisk reads the refcount table's offset and size in clusters from a qcow2
// header (qcow2.txt: refcount_table_offset at byte 48, refcount_table_clusters at 56).
func reftableOnDisk(t *testing.T, path string) (offset uint64, clusters uint32) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 64)
	if _, err := io.ReadFull(f, hdr); err != nil {
		t.Fatal(err)
	}
	return binary.BigEndian.Uint64(hdr[48:56]), binary.BigEndian.Uint32(hdr[56:60])
}

// TestPrometheusScrapesQnbd is the metrics issue's end-to-end test.
func TestPrometheusScrapesQnbd(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := newQcow2(t, dir, "64M", "cluster_size=512")
	off0, clusters0 := reftableOnDisk(t, img)
	s := startQnbd(t, serverConfig{Metrics: true, Args: []string{"-f", "qcow2", "-x", "disk", img}})
	prom := startPrometheus(t, s.MetricsAddr)
	h := connect(t, s, "disk", nil)

	// 40 MiB of 128 KiB writes, each followed by a flush. A scrape lands before the first
	// write and another after half of them, so that Prometheus holds samples from amid the
	// allocation (the rates below need the counters to move between two samples). After
	// every flush the header on disk shows the current refcount table; each change of
	// (offset, size) is one growth. One 128 KiB write needs a few refblocks at most, too few
	// for two growths.
	const writeLen = 128 << 10
	const total = 40 << 20
	var writes, flushes, reads, diskGrows int
	off, clusters := off0, clusters0
	start := prom.waitScrape(time.Time{})
	for pos := int64(0); pos < total; pos += writeLen {
		must(t, h.Pwrite(stamp(5, pos, writeLen), uint64(pos), 0))
		writes++
		must(t, h.Flush(0))
		flushes++
		if o, c := reftableOnDisk(t, img); o != off || c != clusters {
			diskGrows++
			off, clusters = o, c
		}
		if pos+writeLen == total/2 {
			prom.waitScrape(time.Now())
		}
	}
	t.Logf("%d writes and %d flushes in %v; reftable on disk went from %d cluster(s) at %#x to %d at %#x in %d steps",
		writes, flushes, time.Since(start), clusters0, off0, clusters, off, diskGrows)
	buf := make([]byte, 1<<20)
	for pos := int64(0); pos < total; pos += int64(len(buf)) {
		must(t, h.Pread(buf, uint64(pos), 0))
		reads++
		requireBytes(t, "read back", pos, buf, stamp(5, pos, len(buf)))
	}
	if diskGrows == 0 {
		t.Fatalf("the workload did not grow the refcount table on disk (still %d cluster(s) at %#x)", clusters, off)
	}

	// A scrape after the last request; request counters equal the requests sent.
	end := prom.waitScrape(time.Now())
	sel := `{export="disk",result="ok"`
	prom.waitFor(`qnbd_nbd_requests_total`+sel+`,op="write"}`, float64(writes))
	prom.waitFor(`qnbd_nbd_requests_total`+sel+`,op="flush"}`, float64(flushes))
	prom.waitFor(`qnbd_nbd_requests_total`+sel+`,op="read"}`, float64(reads))
	prom.waitFor(`sum(qnbd_nbd_requests_total{export="disk",op!~"read|write|flush|disc"})`, 0)
	prom.waitFor(`sum(qnbd_nbd_requests_total{export="disk",result!="ok"})`, 0)
	prom.waitFor(`qnbd_nbd_bytes_total{export="disk",op="write"}`, total)
	prom.waitFor(`qnbd_nbd_bytes_total{export="disk",op="read"}`, total)
	prom.waitFor(`qnbd_nbd_connections{export="disk"}`, 1)

	// Allocation was seen as a rate, evaluated at the scrape after the writes over a window
	// back to the scrape before them (however long the writes and the waits above took), and
	// the reftable growth matches the disk.
	window := fmt.Sprintf("[%ds]", int(end.Sub(start).Seconds())+5)
	prom.waitPositive(`sum(rate(qnbd_qcow2_clusters_allocated_total{export="disk"}`+window+`))`, end)
	prom.waitPositive(`rate(qnbd_qcow2_clusters_allocated_total{export="disk",kind="data"}`+window+`)`, end)
	prom.waitPositive(`rate(qnbd_qcow2_clusters_allocated_total{export="disk",kind="refblock"}`+window+`)`, end)
	prom.waitFor(`qnbd_qcow2_reftable_grows_total{export="disk"}`, float64(diskGrows))
	prom.waitFor(`qnbd_qcow2_reftable_clusters{export="disk"}`, float64(clusters))
	// Every guest byte written sits in its own 512-byte data cluster.
	prom.waitFor(`qnbd_qcow2_clusters_allocated_total{export="disk",kind="data"}`, total/512)
	prom.waitPositive(fmt.Sprintf(`qnbd_qcow2_flushes_total{export="disk"} >= %d`, flushes), time.Time{})

	// promtool accepts a scrape of the live server without a word.
	resp, err := http.Get("http://" + s.MetricsAddr + "/metrics")
	must(t, err)
	exposition, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, err)
	cmd := exec.Command("promtool", "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	h.Close()
	s.Stop()
	requireClean(t, img)
	if o, c := reftableOnDisk(t, img); o != off || c != clusters {
		t.Errorf("reftable moved during the clean stop: %d at %#x, was %d at %#x", c, o, clusters, off)
	}
}
