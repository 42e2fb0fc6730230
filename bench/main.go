// Flags, the run loop over servers and workloads, and the report.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// result is one (server, workload) measurement.
type result struct {
	Server   string    `json:"server"`
	Workload string    `json:"workload"`
	Result   fioResult `json:"result"`
	Error    string    `json:"error,omitempty"`
	// RatioToQemuNBD is this server's IOPS divided by qemu-nbd's on the same workload.
	RatioToQemuNBD float64 `json:"ratio_to_qemu_nbd,omitempty"`
}

// report is the JSON file -out writes.
type report struct {
	Started  time.Time `json:"started"`
	Runtime  string    `json:"runtime_per_workload"`
	Size     int64     `json:"image_size"`
	Region   int64     `json:"read_region"`
	IODepth  int       `json:"iodepth"`
	CPUs     int       `json:"cpus"`
	Skipped  []string  `json:"skipped,omitempty"`
	Results  []result  `json:"results"`
	Versions []string  `json:"versions"`
}

type config struct {
	params    fioParams
	servers   []string
	workloads []string
	out       string
	qnbd      string
	dir       string
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	if cfg.out != "" {
		if err := writeJSON(cfg.out, rep); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		fmt.Printf("\nresults written to %s\n", cfg.out)
	}
	for _, r := range rep.Results {
		if r.Error != "" {
			os.Exit(1)
		}
	}
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var cfg config
	var size, region, servers, wls string
	fs.DurationVar(&cfg.params.runtime, "runtime", 10*time.Second, "duration of each workload")
	fs.StringVar(&size, "size", "10G", "virtual size of the images")
	fs.StringVar(&region, "region", "1G", "prefilled region the read workloads read")
	fs.IntVar(&cfg.params.iodepth, "iodepth", 16, "requests in flight per connection")
	fs.StringVar(&servers, "servers", "qnbd,qemu-nbd,nbdkit", "servers to measure")
	fs.StringVar(&wls, "workloads", allWorkloadNames(), "workloads to run")
	fs.StringVar(&cfg.out, "out", "", "write results as JSON to this file")
	fs.StringVar(&cfg.qnbd, "qnbd", "bin/qnbd", "the qnbd binary")
	fs.StringVar(&cfg.dir, "dir", "", "work directory for images and sockets (default: a temp dir)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	var err error
	if cfg.params.size, err = parseSize(size); err != nil {
		return cfg, err
	}
	if cfg.params.region, err = parseSize(region); err != nil {
		return cfg, err
	}
	if cfg.params.region > cfg.params.size {
		return cfg, fmt.Errorf("-region %s is larger than -size %s", region, size)
	}
	cfg.servers = splitList(servers)
	cfg.workloads = splitList(wls)
	for _, w := range cfg.workloads {
		if findWorkload(w) == nil {
			return cfg, fmt.Errorf("unknown workload %q (have %s)", w, allWorkloadNames())
		}
	}
	return cfg, nil
}

// run measures every selected (server, workload) pair and prints the table to w.
func run(ctx context.Context, cfg config, w io.Writer) (*report, error) {
	rep := &report{
		Started: time.Now(), Runtime: cfg.params.runtime.String(), Size: cfg.params.size,
		Region: cfg.params.region, IODepth: cfg.params.iodepth, CPUs: runtime.NumCPU(),
	}
	dir := cfg.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "qnbd-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	var kinds []serverKind
	for _, k := range servers(cfg.qnbd) {
		if !contains(cfg.servers, k.name) {
			continue
		}
		if k.name == "qnbd" {
			if _, err := os.Stat(cfg.qnbd); err != nil {
				msg := fmt.Sprintf("qnbd skipped: %s not found (run `make build` once cmd/qnbd exists)", cfg.qnbd)
				fmt.Fprintln(w, msg)
				rep.Skipped = append(rep.Skipped, msg)
				continue
			}
		}
		kinds = append(kinds, k)
	}
	rep.Versions = versions(cfg.qnbd)
	for _, wl := range cfg.workloads {
		wk := findWorkload(wl)
		for _, k := range kinds {
			r := result{Server: k.name, Workload: wk.name}
			res, err := runOne(ctx, k, *wk, cfg.params, filepath.Join(dir, k.name))
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				r.Error = err.Error()
				fmt.Fprintf(w, "%-20s %-9s FAILED: %v\n", wk.name, k.name, err)
			} else {
				r.Result = res
				fmt.Fprintf(w, "%-20s %-9s %10.0f IOPS %9.1f MiB/s\n", wk.name, k.name, res.IOPS, res.MiBps)
			}
			rep.Results = append(rep.Results, r)
		}
	}
	addRatios(rep.Results)
	fmt.Fprintln(w)
	printTable(w, rep)
	return rep, nil
}

// runOne prepares a fresh work directory, the image and the server, and runs one workload.
func runOne(ctx context.Context, k serverKind, w workload, p fioParams, dir string) (fioResult, error) {
	if err := os.RemoveAll(dir); err != nil {
		return fioResult{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fioResult{}, err
	}
	defer os.RemoveAll(dir)
	prefill := int64(0)
	if !w.fresh {
		prefill = p.region
	}
	img, err := prepareImage(ctx, dir, k.raw, p.size, prefill)
	if err != nil {
		return fioResult{}, err
	}
	sock := filepath.Join(dir, "nbd.sock")
	srv, err := start(ctx, k.argv(img, sock), sock)
	if err != nil {
		return fioResult{}, err
	}
	defer srv.stop()
	res, err := runFio(ctx, w, p, sock, dir)
	if err != nil {
		return res, fmt.Errorf("%v (server log: %s)", err, strings.TrimSpace(srv.log.String()))
	}
	return res, nil
}

// addRatios fills RatioToQemuNBD from the qemu-nbd result of the same workload.
func addRatios(rs []result) {
	base := map[string]float64{}
	for _, r := range rs {
		if r.Server == "qemu-nbd" && r.Error == "" {
			base[r.Workload] = r.Result.IOPS
		}
	}
	for i := range rs {
		if b := base[rs[i].Workload]; b > 0 && rs[i].Error == "" {
			rs[i].RatioToQemuNBD = rs[i].Result.IOPS / b
		}
	}
}

func printTable(w io.Writer, rep *report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "workload\tserver\tIOPS\tMiB/s\tmean lat us\tp99 lat us\tvs qemu-nbd\n")
	for _, r := range rep.Results {
		if r.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\tfailed\n", r.Workload, r.Server)
			continue
		}
		ratio := "-"
		if r.RatioToQemuNBD > 0 {
			ratio = fmt.Sprintf("%.2fx", r.RatioToQemuNBD)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.1f\t%.0f\t%.0f\t%s\n", r.Workload, r.Server,
			r.Result.IOPS, r.Result.MiBps, r.Result.MeanLatUs, r.Result.P99LatUs, ratio)
	}
	tw.Flush()
	fmt.Fprintf(w, "(%s per workload, %s images, iodepth %d per connection, %d CPUs)\n",
		rep.Runtime, formatSize(rep.Size), rep.IODepth, rep.CPUs)
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

// versions records the tools measured, for the JSON report.
func versions(qnbdBin string) []string {
	var out []string
	for _, argv := range [][]string{{qnbdBin, "--version"}, {"qemu-nbd", "--version"}, {"nbdkit", "--version"}, {"fio", "--version"}} {
		b, err := execOutput(argv...)
		if err != nil {
			continue
		}
		out = append(out, strings.SplitN(strings.TrimSpace(b), "\n", 2)[0])
	}
	return out
}

func findWorkload(name string) *workload {
	for i := range workloads {
		if workloads[i].name == name {
			return &workloads[i]
		}
	}
	return nil
}

func allWorkloadNames() string {
	var names []string
	for _, w := range workloads {
		names = append(names, w.name)
	}
	return strings.Join(names, ",")
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// parseSize reads sizes like 512, 64K, 10G (binary units).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'K', 'k':
			mult = 1 << 10
		case 'M', 'm':
			mult = 1 << 20
		case 'G', 'g':
			mult = 1 << 30
		case 'T', 't':
			mult = 1 << 40
		}
		if mult != 1 {
			s = s[:n-1]
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return v * mult, nil
}

func formatSize(n int64) string {
	for _, u := range []struct {
		s string
		v int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.v && n%u.v == 0 {
			return fmt.Sprintf("%d %s", n/u.v, u.s)
		}
	}
	return fmt.Sprintf("%d B", n)
}
