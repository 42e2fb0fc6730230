// Running a fio workload with fio's nbd engine.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// fioParams are the knobs shared by every workload.
type fioParams struct {
	runtime time.Duration
	size    int64 // image size
	region  int64 // prefilled region the read workloads use
	iodepth int
}

// runFio runs workload w against the NBD server listening on sock.
func runFio(ctx context.Context, name string, w fioJob, p fioParams, sock, workDir string) (measurement, error) {
	out := filepath.Join(workDir, "fio-"+name+".json")
	size := p.size
	if w.regionR {
		size = p.region
	}
	args := []string{
		"--name=" + name,
		"--ioengine=nbd",
		"--uri=nbd+unix:///?socket=" + sock,
		"--rw=" + w.rw,
		"--bs=" + w.bs,
		"--iodepth=" + strconv.Itoa(p.iodepth),
		"--numjobs=" + strconv.Itoa(w.jobs),
		"--group_reporting",
		"--size=" + strconv.FormatInt(size, 10),
		"--offset=0",
		"--time_based",
		fmt.Sprintf("--runtime=%dms", p.runtime.Milliseconds()),
		"--randrepeat=1",
		"--output-format=json",
		"--output=" + out,
	}
	cmd := exec.CommandContext(ctx, "fio", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return measurement{}, fmt.Errorf("fio %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	b, err := os.ReadFile(out)
	if err != nil {
		return measurement{}, err
	}
	return parseFio(b, strings.Contains(w.rw, "read"))
}

// parseFio extracts the aggregate of the first (group-reported) job.
func parseFio(b []byte, read bool) (measurement, error) {
	// fio may print notices before the JSON document.
	if i := bytes.IndexByte(b, '{'); i > 0 {
		b = b[i:]
	}
	type stats struct {
		IOPS     float64 `json:"iops"`
		BWBytes  float64 `json:"bw_bytes"`
		TotalIOs int64   `json:"total_ios"`
		IOBytes  int64   `json:"io_bytes"`
		LatNs    struct {
			Mean float64 `json:"mean"`
		} `json:"lat_ns"`
		ClatNs struct {
			Percentile map[string]float64 `json:"percentile"`
		} `json:"clat_ns"`
	}
	var doc struct {
		Jobs []struct {
			Error int   `json:"error"`
			Read  stats `json:"read"`
			Write stats `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return measurement{}, fmt.Errorf("parsing fio output: %w", err)
	}
	if len(doc.Jobs) == 0 {
		return measurement{}, fmt.Errorf("fio output has no jobs")
	}
	j := doc.Jobs[0]
	if j.Error != 0 {
		return measurement{}, fmt.Errorf("fio job failed with error %d", j.Error)
	}
	s := j.Write
	if read {
		s = j.Read
	}
	if s.TotalIOs == 0 {
		return measurement{}, fmt.Errorf("fio completed no I/O")
	}
	return measurement{
		IOPS:      s.IOPS,
		MiBps:     s.BWBytes / (1 << 20),
		MeanLatUs: s.LatNs.Mean / 1000,
		P99LatUs:  s.ClatNs.Percentile["99.000000"] / 1000,
		IOs:       s.TotalIOs,
		Bytes:     s.IOBytes,
	}, nil
}
