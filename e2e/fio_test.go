// fio's NBD engine (libnbd) against qnbd: random writes at iodepth 16 over four connections,
// verified by fio, on disjoint and on overlapping regions; the image is clean afterwards.
package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fioJob is the part of fio's JSON output the tests read.
type fioJob struct {
	Error int `json:"error"`
	Read  struct {
		TotalIOs int64 `json:"total_ios"`
	} `json:"read"`
	Write struct {
		TotalIOs int64 `json:"total_ios"`
	} `json:"write"`
}

// runFio writes jobfile into dir, runs fio on it and returns the group's result.
func runFio(t *testing.T, dir, jobfile string) fioJob {
	t.Helper()
	p := filepath.Join(dir, "job.fio")
	must(t, os.WriteFile(p, []byte(jobfile), 0o644))
	r := runCode(t, "fio", "--output-format=json", p)
	// The NBD engine prints "fio: connected to NBD server" before the JSON.
	i := strings.Index(r.Stdout, "{")
	if r.Code != 0 || i < 0 {
		t.Fatalf("fio exited %d\n%s\n%s", r.Code, r.Stdout, r.Stderr)
	}
	var out struct {
		Jobs []fioJob `json:"jobs"`
	}
	if err := json.Unmarshal([]byte(r.Stdout[i:]), &out); err != nil {
		t.Fatalf("fio output: %v\n%s", err, r.Stdout)
	}
	if len(out.Jobs) != 1 {
		t.Fatalf("fio reported %d job groups, want 1 (group_reporting)", len(out.Jobs))
	}
	return out.Jobs[0]
}

// TestFio runs four fio jobs (four NBD connections) of 4 KiB..64 KiB random writes at
// iodepth 16 for two seconds each: first on disjoint 16 MiB regions with fio's crc32c
// verification running alongside (verify_backlog), then all four over the same region
// (no verification possible: the jobs overwrite each other). Then qnbd must stop cleanly
// and the image must check clean.
func TestFio(t *testing.T) {
	for _, tc := range []struct{ format, opts string }{
		{"raw", ""}, {"qcow2", "cluster_size=65536"}, {"qcow2", "cluster_size=4096,refcount_bits=1"},
	} {
		if !formatServed(tc.format) {
			continue
		}
		t.Run(tc.format+"/"+tc.opts, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			img := newImage(t, tc.format, 64, tc.opts)
			s := startQnbd(t, serverConfig{Race: true, Args: []string{"-f", tc.format, "-e", "4", img}})
			common := fmt.Sprintf(`[global]
ioengine=nbd
uri=%s
rw=randwrite
bsrange=4k-64k
iodepth=16
numjobs=4
size=16m
time_based
runtime=2
group_reporting
`, s.URI(""))
			disjoint := runFio(t, dir, common+`offset_increment=16m
verify=crc32c
verify_backlog=64
verify_fatal=1
verify_state_save=0
do_verify=1
[disjoint]
`)
			if disjoint.Error != 0 || disjoint.Write.TotalIOs == 0 || disjoint.Read.TotalIOs == 0 {
				t.Errorf("fio disjoint verified run: error %d, %d writes, %d verify reads", disjoint.Error, disjoint.Write.TotalIOs, disjoint.Read.TotalIOs)
			}
			shared := runFio(t, dir, common+"[shared]\n")
			if shared.Error != 0 || shared.Write.TotalIOs == 0 {
				t.Errorf("fio overlapping run: error %d, %d writes", shared.Error, shared.Write.TotalIOs)
			}
			t.Logf("fio: %d writes + %d verify reads disjoint, %d writes overlapping",
				disjoint.Write.TotalIOs, disjoint.Read.TotalIOs, shared.Write.TotalIOs)
			finishImage(t, s, tc.format, img)
		})
	}
}
