// A short run of the real pipeline (servers, fio, parsing, report) against the reference
// servers, so that `make bench` does not rot between runs.
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

func TestShortBenchAgainstReferenceServers(t *testing.T) {
	dir := t.TempDir()
	cfg := config{
		params:    fioParams{runtime: 700 * time.Millisecond, size: 64 << 20, region: 16 << 20, iodepth: 4},
		servers:   []string{"qnbd", "qemu-nbd", "nbdkit"},
		workloads: []string{"randwrite-4k", "randread-4k"},
		qnbd:      filepath.Join(dir, "no-such-qnbd"),
		dir:       filepath.Join(dir, "work"),
	}
	var out bytes.Buffer
	rep, err := run(context.Background(), cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	if len(rep.Skipped) != 1 || !strings.Contains(out.String(), "qnbd skipped") {
		t.Errorf("a missing qnbd binary must be reported as skipped, got %v", rep.Skipped)
	}
	if len(rep.Results) != 4 {
		t.Fatalf("%d results, want 2 workloads x 2 servers", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Error != "" || r.Result.IOPS <= 0 || r.Result.IOs <= 0 || r.Result.MiBps <= 0 || r.Result.MeanLatUs <= 0 {
			t.Errorf("%s/%s: %+v", r.Workload, r.Server, r)
		}
		if r.Server == "qemu-nbd" && r.RatioToQemuNBD != 1 {
			t.Errorf("qemu-nbd's ratio to itself is %v", r.RatioToQemuNBD)
		}
		if r.Server == "nbdkit" && r.RatioToQemuNBD <= 0 {
			t.Errorf("nbdkit has no ratio")
		}
	}
	for _, want := range []string{"workload", "randread-4k", "vs qemu-nbd", "1.00x"} {
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
	if err := json.Unmarshal(b, &back); err != nil || len(back.Results) != 4 {
		t.Fatalf("JSON report does not round-trip: %v", err)
	}
	if _, err := os.Stat(cfg.dir + "/qemu-nbd"); !os.IsNotExist(err) {
		t.Errorf("work directory not cleaned up: %v", err)
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
	cfg, err := parseFlags(nil)
	if err != nil || cfg.params.size != 10<<30 || cfg.params.runtime != 10*time.Second || len(cfg.workloads) != 5 {
		t.Errorf("defaults: %+v, %v", cfg, err)
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
