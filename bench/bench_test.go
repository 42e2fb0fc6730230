// A short run of the real pipeline (servers, fio, nbdcopy, TLS, parsing, report) against the
// reference servers, so that `make bench` does not rot between runs.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEveryRowKindAgainstReferenceServers runs each kind of row (fio, nbdcopy, nbdcopy over
// TLS) on tiny sizes against the real qemu-nbd and nbdkit, with a qnbd that cannot start, and
// checks the structure of what comes out: every working row has a throughput and the
// server's costs, the ratios point at the right rows, and the failing server is an error
// cell rather than the end of the run.
func TestEveryRowKindAgainstReferenceServers(t *testing.T) {
	dir := t.TempDir()
	const backup = 8 << 20
	cfg := config{
		params:     fioParams{runtime: 300 * time.Millisecond, size: 32 << 20, region: 8 << 20, iodepth: 4},
		backupSize: backup,
		copyPasses: 2,
		rowTimeout: time.Minute,
		servers:    []string{"qnbd", "qemu-nbd", "nbdkit"},
		workloads:  []string{"randread-4k", "nbdcopy-1conn", "nbdcopy-4conn", "nbdcopy-tls-1conn"},
		qnbd:       "/bin/false", // exists, but exits at once: every qnbd row fails
		dir:        filepath.Join(dir, "work"),
	}
	var out bytes.Buffer
	rep, err := run(context.Background(), cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	// 3 plain workloads x 3 servers, and the TLS one without nbdkit.
	if len(rep.Results) != 11 {
		t.Fatalf("%d results, want 11", len(rep.Results))
	}
	if rep.failed() != 4 {
		t.Errorf("%d failed rows, want the 4 of qnbd", rep.failed())
	}
	byRow := map[string]result{}
	for _, r := range rep.Results {
		byRow[r.Workload+"/"+r.Server] = r
		if r.RowSeconds <= 0 {
			t.Errorf("%s/%s: no row wall time", r.Workload, r.Server)
		}
		if r.Server == "qnbd" {
			if !strings.Contains(r.Error, "exited before listening") || r.Result.MiBps != 0 || r.RatioToQemuNBD != 0 {
				t.Errorf("%s/qnbd: want an error cell, got %+v", r.Workload, r)
			}
			continue
		}
		m := r.Result
		if r.Error != "" || m.MiBps <= 0 || m.Bytes <= 0 || m.ServerPeakRSSMiB <= 0 || m.ServerCPUSeconds < 0 || m.ServerCPUPerGiB < 0 {
			t.Errorf("%s/%s: %+v", r.Workload, r.Server, r)
		}
		isCopy := strings.HasPrefix(r.Workload, "nbdcopy")
		if isCopy && (m.Bytes != 2*backup || len(m.PassMiBps) != 2 || m.MiBps != median(m.PassMiBps) || m.IOPS != 0 || m.ClientCPUPerGiB < 0) {
			t.Errorf("%s/%s: an nbdcopy row must copy the whole %d-byte image twice, report the median pass and have no IOPS: %+v",
				r.Workload, r.Server, backup, m)
		}
		if !isCopy && (m.IOPS <= 0 || m.IOs <= 0 || m.MeanLatUs <= 0) {
			t.Errorf("%s/%s: a fio row lacks IOPS or latency: %+v", r.Workload, r.Server, m)
		}
	}
	if _, ok := byRow["nbdcopy-tls-1conn/nbdkit"]; ok {
		t.Errorf("nbdkit has a TLS row, but the TLS rows compare qnbd with qemu-nbd only")
	}
	for _, c := range []struct {
		row  string
		got  func(result) float64
		want string
	}{
		{"nbdcopy-1conn/qemu-nbd", func(r result) float64 { return r.RatioToQemuNBD }, "1"},
		{"nbdcopy-1conn/nbdkit", func(r result) float64 { return r.RatioToNbdkit }, "1"},
		{"randread-4k/qemu-nbd", func(r result) float64 { return r.RatioToNbdkit }, ">0"},
		{"nbdcopy-tls-1conn/qemu-nbd", func(r result) float64 { return r.RatioToQemuNBD }, "1"},
		{"nbdcopy-tls-1conn/qemu-nbd", func(r result) float64 { return r.RatioToNbdkit }, "0"},
		{"nbdcopy-tls-1conn/qemu-nbd", func(r result) float64 { return r.RatioToPlain }, ">0"},
		{"nbdcopy-1conn/qemu-nbd", func(r result) float64 { return r.RatioToPlain }, "0"},
	} {
		v := c.got(byRow[c.row])
		if (c.want == "1" && v != 1) || (c.want == "0" && v != 0) || (c.want == ">0" && v <= 0) {
			t.Errorf("%s: ratio %v, want %s", c.row, v, c.want)
		}
	}
	// The TLS row's ratio to plain is exactly its throughput over the plain row's.
	tlsRow, plainRow := byRow["nbdcopy-tls-1conn/qemu-nbd"], byRow["nbdcopy-1conn/qemu-nbd"]
	if want := tlsRow.Result.MiBps / plainRow.Result.MiBps; tlsRow.RatioToPlain != want {
		t.Errorf("TLS ratio to plain %v, want %v", tlsRow.RatioToPlain, want)
	}
	if tlsRow.Result.ServerCPUPerGiB > 0 && plainRow.Result.ServerCPUPerGiB > 0 &&
		tlsRow.CPURatioToPlain != tlsRow.Result.ServerCPUPerGiB/plainRow.Result.ServerCPUPerGiB {
		t.Errorf("TLS CPU ratio to plain %v, want %v", tlsRow.CPURatioToPlain, tlsRow.Result.ServerCPUPerGiB/plainRow.Result.ServerCPUPerGiB)
	}
	for _, want := range []string{"srv CPU s/GiB", "srv RSS MiB", "vs qemu-nbd", "vs nbdkit", "vs plain", "CPU vs plain",
		"nbdcopy-tls-1conn  qnbd", "error", "errors:", "1.00x"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q", want)
		}
	}
	jsonPath := filepath.Join(dir, "out", "r.json")
	if err := writeJSON(jsonPath, rep); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var back report
	if err := json.Unmarshal(b, &back); err != nil || len(back.Results) != 11 || back.BackupSize != backup {
		t.Fatalf("JSON report does not round-trip: %v", err)
	}
	for _, key := range []string{`"server_cpu_seconds_per_gib"`, `"server_peak_rss_mib"`, `"ratio_to_plain"`, `"ratio_to_nbdkit"`} {
		if !bytes.Contains(b, []byte(key)) {
			t.Errorf("JSON report lacks %s", key)
		}
	}
	entries, err := os.ReadDir(cfg.dir)
	if err != nil || len(entries) != 0 {
		t.Errorf("work directory not cleaned up: %v %v", entries, err)
	}
}

func TestMissingQnbdIsSkippedNotFailed(t *testing.T) {
	dir := t.TempDir()
	cfg := config{
		servers:   []string{"qnbd"},
		workloads: []string{"randread-4k"},
		qnbd:      filepath.Join(dir, "no-such-qnbd"),
		dir:       filepath.Join(dir, "work"),
	}
	var out bytes.Buffer
	rep, err := run(context.Background(), cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Skipped) != 1 || !strings.Contains(out.String(), "qnbd skipped") || len(rep.Results) != 0 {
		t.Errorf("a missing qnbd binary must be reported as skipped, got %v, %d rows", rep.Skipped, len(rep.Results))
	}
}

func TestParseFlagsAndSizes(t *testing.T) {
	for in, want := range map[string]int64{"512": 512, "64K": 64 << 10, "10G": 10 << 30, "4t": 4 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "G", "-1G", "1X"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) succeeded", bad)
		}
	}
	if _, err := parseFlags([]string{"-workloads", "nosuch"}); err == nil {
		t.Errorf("an unknown workload was accepted")
	}
	if _, err := parseFlags([]string{"-size", "1G", "-region", "2G"}); err == nil {
		t.Errorf("a read region larger than the image was accepted")
	}
	if _, err := parseFlags([]string{"-copy-passes", "0"}); err == nil {
		t.Errorf("zero copy passes were accepted")
	}
	if _, err := parseFlags([]string{"-servers", "qnbd,nosuch"}); err == nil {
		t.Errorf("an unknown server was accepted")
	}
	cfg, err := parseFlags(nil)
	if err != nil || cfg.params.size != 10<<30 || cfg.params.runtime != 10*time.Second || len(cfg.workloads) != len(workloads) ||
		cfg.backupSize != 2<<30 || cfg.copyPasses != 3 {
		t.Errorf("defaults: %+v, %v", cfg, err)
	}
	cfg, err = parseFlags([]string{"-qnbd-before", "old/qnbd"})
	if err != nil || cfg.qnbdBefore != "old/qnbd" || !contains(cfg.servers, "qnbd-before") || !contains(cfg.servers, "qnbd") {
		t.Errorf("-qnbd-before does not add the qnbd-before server: %+v, %v", cfg.servers, err)
	}
	cfg, err = parseFlags([]string{"-qnbd-before", "old/qnbd", "-servers", "qnbd,nbdkit"})
	if err != nil || contains(cfg.servers, "qnbd-before") {
		t.Errorf("-qnbd-before overrode an explicit -servers: %+v, %v", cfg.servers, err)
	}
	cfg, err = parseFlags([]string{"-quick", "-backup-size", "16M"})
	if err != nil || cfg.params.size != 1<<30 || cfg.params.region != 256<<20 || cfg.params.runtime != 2*time.Second ||
		cfg.backupSize != 16<<20 {
		t.Errorf("-quick with an explicit -backup-size: %+v, %v", cfg, err)
	}
}

func TestParseFioRejectsFailedJobs(t *testing.T) {
	if _, err := parseFio([]byte(`{"jobs":[{"error":5,"write":{"iops":1,"total_ios":1}}]}`), false); err == nil {
		t.Errorf("a failed job was accepted")
	}
	if _, err := parseFio([]byte(`{"jobs":[{"error":0,"write":{"iops":0,"total_ios":0}}]}`), false); err == nil {
		t.Errorf("a job without I/O was accepted")
	}
	r, err := parseFio([]byte("fio: connected\n"+`{"jobs":[{"read":{"iops":10,"bw_bytes":2097152,"total_ios":20,"lat_ns":{"mean":3000},"clat_ns":{"percentile":{"99.000000":8000}}}}]}`), true)
	if err != nil || r.IOPS != 10 || r.MiBps != 2 || r.MeanLatUs != 3 || r.P99LatUs != 8 || r.IOs != 20 {
		t.Errorf("parseFio = %+v, %v", r, err)
	}
}

func TestMedianOfPasses(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{5}, 5}, {[]float64{9, 1, 5}, 5}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}
