// Flags and small helpers.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is everything a run needs, from the flags.
type config struct {
	params     fioParams
	backupSize int64         // size of the fully written image the nbdcopy rows copy
	copyPasses int           // whole-image copies per nbdcopy row
	rowTimeout time.Duration // limit on one row's client run
	servers    []string
	workloads  []string
	out        string
	qnbd       string
	qnbdBefore string // a second qnbd binary, measured as server qnbd-before
	dir        string
	scale      scaleConfig // the scale table (scale.go)
	// convertSize is the source image of the convert -c rows (convertc.go); 0 skips them.
	convertSize int64
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if cfg.scale.on {
		os.Exit(mainScale(ctx, cfg))
	}
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
	if n := rep.failed(); n > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d of %d rows failed (see the errors above the table)\n", n, len(rep.Results))
		os.Exit(1)
	}
}

// quickDefaults are the sizes -quick uses for every size flag not given explicitly.
var quickDefaults = map[string]string{"runtime": "2s", "size": "1G", "region": "256M", "backup-size": "256M", "convert-size": "512M"}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: go run ./bench [flags]\n\n"+
			"Runs fio workloads and whole-disk nbdcopy backups (plain and over TLS) against qnbd,\n"+
			"qemu-nbd and nbdkit, and prints throughput, the server's CPU seconds per GiB, its peak\n"+
			"RSS and the ratios to qemu-nbd, nbdkit and (for TLS rows) the same server without TLS.\n\n"+
			"Workloads: %s\n\nFlags:\n", allWorkloadNames())
		fs.PrintDefaults()
	}
	var cfg config
	var runtimeS, size, region, backupSize, servers, wls, convertSize string
	var quick bool
	fs.StringVar(&runtimeS, "runtime", "10s", "duration of each fio workload")
	fs.StringVar(&size, "size", "10G", "virtual size of the fio images")
	fs.StringVar(&region, "region", "1G", "prefilled region the fio read workloads read")
	fs.StringVar(&backupSize, "backup-size", "2G", "size of the fully written image the nbdcopy rows copy")
	fs.StringVar(&convertSize, "convert-size", "4G", "source image of the convert -c rows (ext4 made with mkfs.ext4 -d, over half full); 0 skips them")
	fs.IntVar(&cfg.copyPasses, "copy-passes", 3, "whole-image copies per nbdcopy row (the median pass is reported)")
	fs.BoolVar(&quick, "quick", false, "small and short: "+quickSummary()+" unless given")
	fs.IntVar(&cfg.params.iodepth, "iodepth", 16, "fio requests in flight per connection")
	fs.DurationVar(&cfg.rowTimeout, "row-timeout", 5*time.Minute, "give up on a row whose client runs longer than this (on top of -runtime)")
	fs.StringVar(&servers, "servers", "qnbd,qemu-nbd,nbdkit", "servers to measure")
	fs.StringVar(&wls, "workloads", allWorkloadNames(), "workloads (rows) to run")
	fs.StringVar(&cfg.out, "out", "", "write results as JSON to this file")
	fs.StringVar(&cfg.qnbd, "qnbd", "bin/qnbd", "the qnbd binary")
	fs.StringVar(&cfg.qnbdBefore, "qnbd-before", "", "another qnbd binary to measure as server qnbd-before (added to -servers unless that is given)")
	fs.StringVar(&cfg.dir, "dir", "", "work directory for images and sockets (default: a temp dir)")
	var scaleSizes, scaleL2 string
	addScaleFlags(fs, &cfg.scale, &scaleSizes, &scaleL2)
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if cfg.qnbdBefore != "" && !given["servers"] {
		servers += ",qnbd-before"
	}
	if err := parseScale(&cfg.scale, scaleSizes, scaleL2); err != nil {
		return cfg, err
	}
	if quick {
		for name, v := range quickDefaults {
			if !given[name] {
				_ = fs.Set(name, v)
			}
		}
	}
	var err error
	if cfg.params.runtime, err = time.ParseDuration(runtimeS); err != nil || cfg.params.runtime <= 0 {
		return cfg, fmt.Errorf("bad -runtime %q", runtimeS)
	}
	if cfg.params.size, err = parseSize(size); err != nil {
		return cfg, err
	}
	if cfg.params.region, err = parseSize(region); err != nil {
		return cfg, err
	}
	if cfg.params.region > cfg.params.size {
		return cfg, fmt.Errorf("-region %s is larger than -size %s", region, size)
	}
	if cfg.backupSize, err = parseSize(backupSize); err != nil {
		return cfg, err
	}
	if convertSize == "0" {
		cfg.convertSize = 0
	} else if cfg.convertSize, err = parseSize(convertSize); err != nil {
		return cfg, err
	}
	if cfg.copyPasses < 1 {
		return cfg, fmt.Errorf("-copy-passes must be at least 1")
	}
	if cfg.rowTimeout <= 0 {
		return cfg, fmt.Errorf("-row-timeout must be positive")
	}
	cfg.servers = splitList(servers)
	for _, s := range cfg.servers {
		if !knownServer(s) {
			return cfg, fmt.Errorf("unknown server %q (have qnbd, qnbd-before, qemu-nbd, nbdkit)", s)
		}
	}
	cfg.workloads = splitList(wls)
	for _, w := range cfg.workloads {
		if findWorkload(w) == nil {
			return cfg, fmt.Errorf("unknown workload %q (have %s)", w, allWorkloadNames())
		}
	}
	return cfg, nil
}

func quickSummary() string {
	var parts []string
	for _, name := range []string{"runtime", "size", "region", "backup-size"} {
		parts = append(parts, "-"+name+" "+quickDefaults[name])
	}
	return strings.Join(parts, ", ")
}

func knownServer(name string) bool {
	for _, k := range servers("", "-") {
		if k.name == name {
			return true
		}
	}
	return false
}

// versions records the tools measured, for the JSON report.
func versions(qnbdBin string) []string {
	var out []string
	for _, argv := range [][]string{{qnbdBin, "--version"}, {"qemu-nbd", "--version"}, {"nbdkit", "--version"}, {"nbdcopy", "--version"}, {"fio", "--version"}} {
		b, err := execOutput(argv...)
		if err != nil {
			continue
		}
		out = append(out, strings.SplitN(strings.TrimSpace(b), "\n", 2)[0])
	}
	return out
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
