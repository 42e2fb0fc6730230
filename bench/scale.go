// The scale table (-scale): random 4 KiB writes and reads as the image grows, qnbd against
// qemu-nbd, with each server's default caches and with the same L2 cache given to both.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// scaleConfig is what the -scale flags select.
type scaleConfig struct {
	on      bool
	sizes   []int64
	l2Cache int64 // l2-cache-size of the equal-cache rows; 0: no such rows
	runtime time.Duration
}

// addScaleFlags registers the scale table's flags on fs.
func addScaleFlags(fs *flag.FlagSet, sc *scaleConfig, sizes, l2 *string) {
	fs.BoolVar(&sc.on, "scale", false, "run the scale table (random 4 KiB writes and reads per image size, qnbd and qemu-nbd) instead of the rows")
	fs.StringVar(sizes, "scale-sizes", "1G,64G,1T,4T", "image sizes of the scale table")
	fs.StringVar(l2, "scale-l2-cache", "4M", "l2-cache-size both servers get (--image-opts) in the scale table's equal-cache rows; 0 for none")
	fs.DurationVar(&sc.runtime, "scale-runtime", 5*time.Second, "duration of each scale table row")
}

// parseScale completes sc from the flag strings.
func parseScale(sc *scaleConfig, sizes, l2 string) error {
	for _, s := range splitList(sizes) {
		n, err := parseSize(s)
		if err != nil {
			return err
		}
		sc.sizes = append(sc.sizes, n)
	}
	if sc.on && len(sc.sizes) == 0 {
		return fmt.Errorf("-scale-sizes is empty")
	}
	if l2 != "0" {
		var err error
		if sc.l2Cache, err = parseSize(l2); err != nil {
			return err
		}
	}
	if sc.runtime <= 0 {
		return fmt.Errorf("-scale-runtime must be positive")
	}
	return nil
}

// scaleOps are the scale table's workloads. Reads run on an image with 64 KiB written at the
// start of every 512 MiB of guest space, so every L2 table exists and every read walks the
// L1 and L2 tables; writes on a fresh image.
var scaleOps = []fioJob{
	{rw: "randwrite", bs: "4k", jobs: 1, fresh: true},
	{rw: "randread", bs: "4k", jobs: 1},
}

// scaleStride is the distance between the prefilled clusters of the read image.
const scaleStride = 512 << 20

// scaleRow is one line of the scale table: one size, workload and cache setting, both servers.
type scaleRow struct {
	Size    int64       `json:"image_size"`
	Op      string      `json:"workload"`
	Cache   string      `json:"cache"` // "default" or the l2-cache-size both got
	QNBD    measurement `json:"qnbd"`
	Qemu    measurement `json:"qemu_nbd"`
	Ratio   float64     `json:"ratio_to_qemu_nbd,omitempty"`
	QNBDErr string      `json:"qnbd_error,omitempty"`
	QemuErr string      `json:"qemu_nbd_error,omitempty"`
}

// scaleReport is the JSON file -out writes with -scale.
type scaleReport struct {
	Started  time.Time  `json:"started"`
	Runtime  string     `json:"runtime_per_row"`
	IODepth  int        `json:"iodepth"`
	LoadAvg  string     `json:"loadavg_at_start,omitempty"`
	Rows     []scaleRow `json:"rows"`
	Versions []string   `json:"versions"`
}

func (r *scaleReport) failed() int {
	n := 0
	for _, row := range r.Rows {
		if row.QNBDErr != "" || row.QemuErr != "" {
			n++
		}
	}
	return n
}

// scaleArgv is the command line serving image on sock: the server's defaults (cache == 0), or
// the same --image-opts with l2-cache-size=cache for both servers.
func scaleArgv(server, qnbdBin, image, sock string, cache int64) []string {
	bin, extra := qnbdBin, []string(nil)
	if server == "qemu-nbd" {
		bin, extra = "qemu-nbd", []string{"--cache=writeback"}
	}
	argv := append([]string{bin, "-t", "-e", "8"}, extra...)
	if cache == 0 {
		return append(argv, "-f", "qcow2", "-k", sock, image)
	}
	opts := fmt.Sprintf("driver=qcow2,file.filename=%s,l2-cache-size=%d", image, cache)
	return append(argv, "--image-opts", "-k", sock, opts)
}

// runScale measures the scale table and prints it to w.
func runScale(ctx context.Context, cfg config, w io.Writer) (*scaleReport, error) {
	load, _ := os.ReadFile("/proc/loadavg")
	rep := &scaleReport{Started: time.Now(), Runtime: cfg.scale.runtime.String(), IODepth: cfg.params.iodepth,
		LoadAvg: strings.TrimSpace(string(load)), Versions: versions(cfg.qnbd)}
	dir := cfg.dir
	if dir == "" {
		d, err := os.MkdirTemp("", "qnbd-scale-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	caches := []int64{0}
	if cfg.scale.l2Cache > 0 {
		caches = append(caches, cfg.scale.l2Cache)
	}
	for _, size := range cfg.scale.sizes {
		for _, op := range scaleOps {
			readImg := ""
			if !op.fresh {
				p, err := prefillStrided(ctx, filepath.Join(dir, "read"), size)
				if err != nil {
					return nil, err
				}
				readImg = p
			}
			for _, cache := range caches {
				row := scaleRow{Size: size, Op: op.rw + "-4k", Cache: "default"}
				if cache > 0 {
					row.Cache = "l2-cache-size=" + sizeName(cache)
				}
				for _, server := range []string{"qnbd", "qemu-nbd"} {
					m, err := scaleCell(ctx, cfg, server, op, size, cache, readImg, filepath.Join(dir, server))
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					if server == "qnbd" {
						row.QNBD, row.QNBDErr = m, errText(err)
					} else {
						row.Qemu, row.QemuErr = m, errText(err)
					}
					if err != nil {
						fmt.Fprintf(w, "%-6s %-12s %-20s %-9s FAILED: %v\n", sizeName(size), row.Op, row.Cache, server, err)
					} else {
						fmt.Fprintf(w, "%-6s %-12s %-20s %-9s %9.0f IOPS\n", sizeName(size), row.Op, row.Cache, server, m.IOPS)
					}
				}
				if row.QNBDErr == "" && row.QemuErr == "" && row.Qemu.IOPS > 0 {
					row.Ratio = row.QNBD.IOPS / row.Qemu.IOPS
				}
				rep.Rows = append(rep.Rows, row)
			}
			if readImg != "" {
				os.RemoveAll(filepath.Dir(readImg))
			}
		}
	}
	fmt.Fprintln(w)
	printScale(w, rep)
	return rep, nil
}

// scaleCell runs one workload against one server in its own scratch directory.
func scaleCell(ctx context.Context, cfg config, server string, op fioJob, size, cache int64, readImg, dir string) (measurement, error) {
	if err := os.RemoveAll(dir); err != nil {
		return measurement{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return measurement{}, err
	}
	defer os.RemoveAll(dir)
	img := readImg
	if img == "" {
		var err error
		if img, err = prepareImage(ctx, dir, false, size, 0); err != nil {
			return measurement{}, err
		}
	}
	sock := filepath.Join(dir, "nbd.sock")
	p := cfg.params
	p.runtime, p.size = cfg.scale.runtime, size
	return measureServer(ctx, scaleArgv(server, cfg.qnbd, img, sock, cache), sock, p.runtime+cfg.rowTimeout, func(ctx context.Context) (measurement, error) {
		return runFio(ctx, "scale-"+op.rw, op, p, sock, dir)
	})
}

// prefillStrided creates a qcow2 image of size in dir with 64 KiB written at the start of
// every scaleStride bytes, with qemu-io (in batches, to keep its command lines short).
func prefillStrided(ctx context.Context, dir string, size int64) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	p, err := prepareImage(ctx, dir, false, size, 0)
	if err != nil {
		return "", err
	}
	const batch = 1024
	var args []string
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		err := runQuiet(ctx, "qemu-io", append(append([]string{"-f", "qcow2"}, args...), p)...)
		args = args[:0]
		return err
	}
	for off := int64(0); off < size; off += scaleStride {
		args = append(args, "-c", fmt.Sprintf("write -q -P 0x5a %d 65536", off))
		if len(args) == 2*batch {
			if err := flush(); err != nil {
				return "", err
			}
		}
	}
	if err := flush(); err != nil {
		return "", err
	}
	return p, nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// sizeName prints a size in the largest binary unit that divides it.
func sizeName(n int64) string {
	for _, u := range []struct {
		s     string
		shift uint
	}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", n>>u.shift, u.s)
		}
	}
	return fmt.Sprint(n)
}

// printScale prints the scale table: per row both servers' IOPS, p99 latency, peak RSS and
// CPU seconds per GiB, and qnbd's IOPS over qemu-nbd's.
func printScale(w io.Writer, rep *scaleReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "size\tworkload\tcache\tqnbd IOPS\tp99 ms\tRSS MiB\tCPU s/GiB\tqemu-nbd IOPS\tp99 ms\tRSS MiB\tCPU s/GiB\tqnbd/qemu-nbd\t")
	cell := func(m measurement, errS string) string {
		if errS != "" {
			return "FAILED\t-\t-\t-"
		}
		return fmt.Sprintf("%.0f\t%.1f\t%.0f\t%.1f", m.IOPS, m.P99LatUs/1000, m.ServerPeakRSSMiB, m.ServerCPUPerGiB)
	}
	for _, r := range rep.Rows {
		ratio := "-"
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.2fx", r.Ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", sizeName(r.Size), r.Op, r.Cache, cell(r.QNBD, r.QNBDErr), cell(r.Qemu, r.QemuErr), ratio)
	}
	tw.Flush()
	printGrowth(w, rep)
}

// printGrowth states, per workload with default caches, each server's IOPS at the largest
// size as a share of its IOPS at the smallest: how flat the cost stays as the image grows.
func printGrowth(w io.Writer, rep *scaleReport) {
	type ends struct{ small, large *scaleRow }
	byOp := map[string]*ends{}
	var order []string
	for i := range rep.Rows {
		r := &rep.Rows[i]
		if r.Cache != "default" {
			continue
		}
		e := byOp[r.Op]
		if e == nil {
			e = &ends{r, r}
			byOp[r.Op] = e
			order = append(order, r.Op)
		}
		if r.Size < e.small.Size {
			e.small = r
		}
		if r.Size > e.large.Size {
			e.large = r
		}
	}
	for _, op := range order {
		e := byOp[op]
		if e.small == e.large {
			continue
		}
		share := func(a, b measurement, errA, errB string) string {
			if errA != "" || errB != "" || b.IOPS == 0 {
				return "-"
			}
			return fmt.Sprintf("%.0f%%", 100*a.IOPS/b.IOPS)
		}
		fmt.Fprintf(w, "%s at %s as a share of %s: qnbd %s, qemu-nbd %s\n", op, sizeName(e.large.Size), sizeName(e.small.Size),
			share(e.large.QNBD, e.small.QNBD, e.large.QNBDErr, e.small.QNBDErr),
			share(e.large.Qemu, e.small.Qemu, e.large.QemuErr, e.small.QemuErr))
	}
}

// mainScale runs the scale table for main and returns the exit status.
func mainScale(ctx context.Context, cfg config) int {
	rep, err := runScale(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	if cfg.out != "" {
		if err := writeScaleJSON(cfg.out, rep); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		fmt.Printf("\nresults written to %s\n", cfg.out)
	}
	if n := rep.failed(); n > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d of %d scale rows had a failed server (see the errors above the table)\n", n, len(rep.Rows))
		return 1
	}
	return 0
}

func writeScaleJSON(path string, rep *scaleReport) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
