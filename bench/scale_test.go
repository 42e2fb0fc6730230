package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScaleTableAgainstQemuNBD runs the scale table on two small sizes against the real
// qemu-nbd, with a qnbd that cannot start: every qemu-nbd cell, with its default caches and
// with the equal --image-opts l2-cache-size, has IOPS, latency and the server's costs; every
// qnbd cell is an error, which fails the row rather than the run; the read image was
// prefilled (reads find data), and the printed table has a line per row.
func TestScaleTableAgainstQemuNBD(t *testing.T) {
	dir := t.TempDir()
	cfg := config{
		params:     fioParams{iodepth: 4},
		rowTimeout: time.Minute,
		qnbd:       "/bin/false",
		dir:        filepath.Join(dir, "work"),
		scale:      scaleConfig{on: true, sizes: []int64{1 << 30, 2 << 30}, l2Cache: 1 << 20, runtime: 300 * time.Millisecond},
	}
	var out bytes.Buffer
	rep, err := runScale(context.Background(), cfg, &out)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", out.String())
	if want := 2 * len(scaleOps) * 2; len(rep.Rows) != want {
		t.Fatalf("%d rows, want %d", len(rep.Rows), want)
	}
	for _, r := range rep.Rows {
		name := sizeName(r.Size) + " " + r.Op + " " + r.Cache
		if r.QNBDErr == "" {
			t.Errorf("%s: qnbd (/bin/false) did not fail", name)
		}
		if r.QemuErr != "" {
			t.Errorf("%s: qemu-nbd failed: %s", name, r.QemuErr)
			continue
		}
		m := r.Qemu
		if m.IOPS <= 0 || m.P99LatUs <= 0 || m.ServerPeakRSSMiB <= 0 || m.Bytes <= 0 {
			t.Errorf("%s: qemu-nbd measurement incomplete: %+v", name, m)
		}
		if r.Ratio != 0 {
			t.Errorf("%s: ratio %v with a failed qnbd cell", name, r.Ratio)
		}
	}
	if rep.failed() != len(rep.Rows) {
		t.Errorf("failed() = %d, want every row (%d)", rep.failed(), len(rep.Rows))
	}
	if !strings.Contains(out.String(), "l2-cache-size=1M") || !strings.Contains(out.String(), "randread-4k at 2G as a share of 1G") {
		t.Errorf("table lacks the equal-cache rows or the growth line:\n%s", out.String())
	}
}

// TestScaleArgvGivesBothServersTheSameCache: the equal-cache rows pass the same --image-opts
// to both servers, and the default rows qemu-nbd's plain -f qcow2 command line.
func TestScaleArgvGivesBothServersTheSameCache(t *testing.T) {
	q := scaleArgv("qnbd", "bin/qnbd", "/i.qcow2", "/s", 4<<20)
	e := scaleArgv("qemu-nbd", "bin/qnbd", "/i.qcow2", "/s", 4<<20)
	const opts = "driver=qcow2,file.filename=/i.qcow2,l2-cache-size=4194304"
	if q[len(q)-1] != opts || e[len(e)-1] != opts || !contains(q, "--image-opts") || !contains(e, "--image-opts") {
		t.Errorf("equal-cache argv:\n qnbd %q\n qemu-nbd %q", q, e)
	}
	d := scaleArgv("qemu-nbd", "bin/qnbd", "/i.qcow2", "/s", 0)
	if strings.Join(d, " ") != "qemu-nbd -t -e 8 --cache=writeback -f qcow2 -k /s /i.qcow2" {
		t.Errorf("default argv %q", d)
	}
	for n, want := range map[int64]string{1 << 30: "1G", 4 << 40: "4T", 64 << 30: "64G", 3 << 20: "3M", 1000: "1000"} {
		if got := sizeName(n); got != want {
			t.Errorf("sizeName(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestScaleFlags: -scale-l2-cache 0 drops the equal-cache rows, sizes parse, bad values fail.
func TestScaleFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-scale", "-scale-sizes", "1G,4T", "-scale-l2-cache", "0"})
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.scale.on || cfg.scale.l2Cache != 0 || len(cfg.scale.sizes) != 2 || cfg.scale.sizes[1] != 4<<40 {
		t.Errorf("parsed %+v", cfg.scale)
	}
	cfg, err = parseFlags([]string{"-scale"})
	if err != nil || cfg.scale.l2Cache != 4<<20 || len(cfg.scale.sizes) != 4 {
		t.Errorf("defaults: %+v, %v", cfg.scale, err)
	}
	for _, bad := range [][]string{{"-scale", "-scale-sizes", "1X"}, {"-scale", "-scale-sizes", ""}, {"-scale-runtime", "0s"}} {
		if _, err := parseFlags(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
