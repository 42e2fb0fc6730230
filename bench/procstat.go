// What a server process costs: CPU time and peak resident memory, read from /proc.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicksPerSecond is USER_HZ, the unit of utime and stime in /proc/PID/stat. Linux fixes
// it at 100 for user space on every architecture (it is what sysconf(_SC_CLK_TCK) returns);
// TestClockTicksMatchGetconf checks it against `getconf CLK_TCK`.
const clockTicksPerSecond = 100

// cpuTime is the user plus system CPU time a process has used, all its threads together
// (including threads that have exited), at a resolution of one clock tick (10 ms).
type cpuTime time.Duration

// Seconds returns the time in seconds.
func (c cpuTime) Seconds() float64 { return time.Duration(c).Seconds() }

// kibibytes is a memory size in KiB, the unit /proc/PID/status uses.
type kibibytes int64

// MiB returns the size in MiB.
func (k kibibytes) MiB() float64 { return float64(k) / 1024 }

// processCPU reads utime + stime of process pid from /proc/pid/stat.
func processCPU(pid int) (cpuTime, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU extracts utime + stime from the text of /proc/PID/stat. The command name (the
// second field) is in parentheses and may itself contain spaces and parentheses, so the
// fields are counted from the last ')'. After it come state (field 3) ... utime (14), stime (15).
func parseStatCPU(b []byte) (cpuTime, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat without a command name: %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	const utimeAt, stimeAt = 14 - 3, 15 - 3
	if len(f) <= stimeAt {
		return 0, fmt.Errorf("/proc stat has only %d fields after the command name", len(f))
	}
	var ticks int64
	for _, s := range []string{f[utimeAt], f[stimeAt]} {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("/proc stat: bad tick count %q", s)
		}
		ticks += v
	}
	return cpuTime(time.Duration(ticks) * time.Second / clockTicksPerSecond), nil
}

// peakRSS reads VmHWM (the peak resident set size) of process pid from /proc/pid/status.
func peakRSS(pid int) (kibibytes, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseStatusHWM(b)
}

// parseStatusHWM finds the "VmHWM:   1234 kB" line of /proc/PID/status.
func parseStatusHWM(b []byte) (kibibytes, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("/proc status: bad VmHWM line %q", sc.Text())
		}
		v, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || v < 0 {
			return 0, fmt.Errorf("/proc status: bad VmHWM line %q", sc.Text())
		}
		return kibibytes(v), nil
	}
	return 0, fmt.Errorf("/proc status has no VmHWM line")
}
