// One row's measurement: the client's figures plus what the server spent on them.
package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// gib is one GiB in bytes, the unit CPU cost is stated per.
const gib = 1 << 30

// measurement is what one (server, workload) row measured. The latency fields and IOPS are
// fio's; nbdcopy rows have throughput and costs only.
type measurement struct {
	IOPS      float64 `json:"iops,omitempty"`
	MiBps     float64 `json:"mib_per_s"`
	MeanLatUs float64 `json:"mean_latency_us,omitempty"`
	P99LatUs  float64 `json:"p99_latency_us,omitempty"`
	IOs       int64   `json:"ios,omitempty"`
	// Bytes is what the client moved over NBD in the measured interval.
	Bytes int64 `json:"bytes"`
	// ServerCPUSeconds is the server process's user+system time over the measured interval,
	// ServerCPUPerGiB the same divided by Bytes in GiB.
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	ServerCPUPerGiB  float64 `json:"server_cpu_seconds_per_gib"`
	// ServerPeakRSSMiB is the server's VmHWM at the end of the row (each row starts its own
	// server process).
	ServerPeakRSSMiB float64 `json:"server_peak_rss_mib"`
	// PassMiBps is each nbdcopy pass's throughput (nbdcopy rows only); MiBps is their median.
	PassMiBps []float64 `json:"pass_mib_per_s,omitempty"`
	// ClientCPUPerGiB is nbdcopy's own user+system time per GiB (nbdcopy rows only): on 2
	// cores the client competes with the server for the same CPUs.
	ClientCPUPerGiB float64 `json:"client_cpu_seconds_per_gib,omitempty"`
}

// perGiB divides a CPU time by a byte count in GiB.
func perGiB(c cpuTime, bytes int64) float64 {
	if bytes <= 0 {
		return 0
	}
	return c.Seconds() / (float64(bytes) / gib)
}

// clientFunc runs the measured client against a server that is already listening.
type clientFunc func(ctx context.Context) (measurement, error)

// measureServer starts argv on sock, runs client against it within timeout, and adds the
// server's CPU time over the client's run and its peak RSS to the client's measurement. The
// servers measured here serve in the process started (none is told to fork), so that
// process's /proc entry covers every thread that did the work.
func measureServer(ctx context.Context, argv []string, sock string, timeout time.Duration, client clientFunc) (measurement, error) {
	srv, err := start(ctx, argv, sock)
	if err != nil {
		return measurement{}, err
	}
	defer srv.stop()
	pid := srv.cmd.Process.Pid
	before, err := processCPU(pid)
	if err != nil {
		return measurement{}, err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	m, err := client(cctx)
	if err == nil && cctx.Err() != nil {
		err = fmt.Errorf("client did not finish within %s", timeout)
	}
	if err != nil {
		return m, fmt.Errorf("%v (server log: %s)", err, strings.TrimSpace(srv.logText()))
	}
	after, err := processCPU(pid)
	if err != nil {
		return m, fmt.Errorf("server gone after the run: %v (server log: %s)", err, strings.TrimSpace(srv.logText()))
	}
	hwm, err := peakRSS(pid)
	if err != nil {
		return m, err
	}
	m.ServerCPUSeconds = (after - before).Seconds()
	m.ServerCPUPerGiB = perGiB(after-before, m.Bytes)
	m.ServerPeakRSSMiB = hwm.MiB()
	return m, nil
}
