// The results: ratios between rows, the printed table and the JSON report.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// result is one (server, workload) row.
type result struct {
	Server   string      `json:"server"`
	Workload string      `json:"workload"`
	Result   measurement `json:"result"`
	Error    string      `json:"error,omitempty"`
	// RowSeconds is the wall time of the whole row: making its image (or the shared backup
	// image, for the first nbdcopy row), starting and stopping the server, the client and the
	// cleanup. On a busy disk the setup and cleanup can take far longer than the measurement.
	RowSeconds float64 `json:"row_seconds"`
	// The ratios compare throughput (MiB/s; for fio rows that is also the IOPS ratio, the
	// block size being the same) with another row of the same run:
	// RatioToQemuNBD to qemu-nbd on the same workload (over TLS: qemu-nbd over TLS),
	// RatioToNbdkit to nbdkit's file plugin on a raw copy, and RatioToPlain (TLS rows) to the
	// same server on the same workload without TLS.
	RatioToQemuNBD float64 `json:"ratio_to_qemu_nbd,omitempty"`
	RatioToNbdkit  float64 `json:"ratio_to_nbdkit,omitempty"`
	RatioToPlain   float64 `json:"ratio_to_plain,omitempty"`
	// CPURatioToPlain (TLS rows) is the server's CPU seconds per GiB over its own figure on
	// the same workload without TLS: what TLS costs the server, whoever limits throughput.
	CPURatioToPlain float64 `json:"cpu_ratio_to_plain,omitempty"`
}

// report is the JSON file -out writes.
type report struct {
	Started    time.Time `json:"started"`
	Runtime    string    `json:"runtime_per_workload"`
	Size       int64     `json:"image_size"`
	Region     int64     `json:"read_region"`
	IODepth    int       `json:"iodepth"`
	BackupSize int64     `json:"backup_image_size"`
	CPUs       int       `json:"cpus"`
	// LoadAvg is /proc/loadavg when the run started: other work on the machine competes for
	// the same CPUs.
	LoadAvg string   `json:"loadavg_at_start,omitempty"`
	Skipped []string `json:"skipped,omitempty"`
	Results []result `json:"results"`
	// ConvertC are the convert -c rows (convertc.go).
	ConvertC []convertCResult `json:"convert_c,omitempty"`
	Versions []string         `json:"versions"`
}

func newReport(cfg config) *report {
	load, _ := os.ReadFile("/proc/loadavg")
	return &report{
		Started: time.Now(), Runtime: cfg.params.runtime.String(), Size: cfg.params.size,
		Region: cfg.params.region, IODepth: cfg.params.iodepth, BackupSize: cfg.backupSize,
		CPUs: runtime.NumCPU(), LoadAvg: strings.TrimSpace(string(load)),
	}
}

// failed counts the rows that ended in an error.
func (r *report) failed() int {
	n := 0
	for _, res := range r.Results {
		if res.Error != "" {
			n++
		}
	}
	return n
}

// addRatios fills the ratio fields from the other rows of the same run.
func addRatios(rs []result) {
	rows := map[[2]string]measurement{} // (server, workload) -> its measurement
	for _, r := range rs {
		if r.Error == "" {
			rows[[2]string{r.Server, r.Workload}] = r.Result
		}
	}
	ratio := func(v float64, server, workload string) float64 {
		if b := rows[[2]string{server, workload}].MiBps; b > 0 {
			return v / b
		}
		return 0
	}
	for i := range rs {
		r := &rs[i]
		if r.Error != "" {
			continue
		}
		r.RatioToQemuNBD = ratio(r.Result.MiBps, "qemu-nbd", r.Workload)
		r.RatioToNbdkit = ratio(r.Result.MiBps, "nbdkit", r.Workload)
		if plain := findWorkload(r.Workload).plainCounterpart(); plain != "" {
			r.RatioToPlain = ratio(r.Result.MiBps, r.Server, plain)
			if b := rows[[2]string{r.Server, plain}].ServerCPUPerGiB; b > 0 {
				r.CPURatioToPlain = r.Result.ServerCPUPerGiB / b
			}
		}
	}
}

func printTable(w io.Writer, rep *report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "workload\tserver\tMiB/s\tIOPS\tsrv CPU s/GiB\tsrv RSS MiB\tmean lat us\tp99 lat us\tvs qemu-nbd\tvs nbdkit\tvs plain\tCPU vs plain\t\n")
	var errs []string
	for _, r := range rep.Results {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\terror\t-\t-\t-\t-\t-\t-\t-\t-\t-\t\n", r.Workload, r.Server)
			errs = append(errs, fmt.Sprintf("  %s/%s: %s", r.Workload, r.Server, firstLine(r.Error, 240)))
			continue
		}
		m := r.Result
		iops, mean, p99 := "-", "-", "-"
		if m.IOPS > 0 {
			iops, mean, p99 = fmt.Sprintf("%.0f", m.IOPS), fmt.Sprintf("%.0f", m.MeanLatUs), fmt.Sprintf("%.0f", m.P99LatUs)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f\t%s\t%.2f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Workload, r.Server,
			m.MiBps, iops, m.ServerCPUPerGiB, m.ServerPeakRSSMiB, mean, p99,
			formatRatio(r.RatioToQemuNBD), formatRatio(r.RatioToNbdkit), formatRatio(r.RatioToPlain), formatRatio(r.CPURatioToPlain))
	}
	tw.Flush()
	fmt.Fprintf(w, "(fio: %s per workload, %s images, iodepth %d per connection; nbdcopy: %s fully written image to null:;\n"+
		" %d CPUs, load average at start %s; srv CPU = the server's user+system seconds per GiB moved,\n"+
		" srv RSS = its peak RSS; ratios compare MiB/s; vs plain = the same server without TLS,\n"+
		" CPU vs plain = its srv CPU s/GiB over its own without TLS)\n",
		rep.Runtime, formatSize(rep.Size), rep.IODepth, formatSize(rep.BackupSize), rep.CPUs, rep.LoadAvg)
	if len(errs) > 0 {
		fmt.Fprintf(w, "errors:\n%s\n", strings.Join(errs, "\n"))
	}
}

func formatRatio(r float64) string {
	if r <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", r)
}

// firstLine shortens an error to its first line and at most n bytes, for the table.
func firstLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

func writeJSON(path string, rep *report) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
