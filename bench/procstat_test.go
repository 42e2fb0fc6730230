package main

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestStatCPUCountsFromTheLastParenthesis(t *testing.T) {
	// A command name with spaces and parentheses; utime 250 and stime 50 ticks.
	line := "4242 (qemu) (x y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 100 1000 200 18446744073709551615\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil || got != cpuTime(3*time.Second) {
		t.Errorf("parseStatCPU = %v, %v; want 3s", time.Duration(got), err)
	}
	for _, bad := range []string{"4242 qemu S 1", "4242 (qemu) S 1 2 3", "4242 (q) S 1 4242 4242 0 -1 1 1 0 0 0 x 50 0"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) succeeded", bad)
		}
	}
}

func TestStatusHWMInKiB(t *testing.T) {
	got, err := parseStatusHWM([]byte("Name:\tqnbd\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n"))
	if err != nil || got != 2048 || got.MiB() != 2 {
		t.Errorf("parseStatusHWM = %v, %v; want 2048 KiB", got, err)
	}
	for _, bad := range []string{"Name:\tx\n", "VmHWM:\t12 MB\n", "VmHWM:\tlots kB\n"} {
		if _, err := parseStatusHWM([]byte(bad)); err == nil {
			t.Errorf("parseStatusHWM(%q) succeeded", bad)
		}
	}
}

func TestClockTicksMatchGetconf(t *testing.T) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		t.Fatal(err)
	}
	if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || n != clockTicksPerSecond {
		t.Errorf("getconf CLK_TCK = %q, the bench assumes %d", out, clockTicksPerSecond)
	}
}

// TestOwnProcessCostIsReadable reads this test process's own /proc entries: its CPU time
// grows while it works (polled, with a deadline) and its peak RSS is positive.
func TestOwnProcessCostIsReadable(t *testing.T) {
	pid := os.Getpid()
	start, err := processCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	x := uint64(1)
	for {
		for i := 0; i < 1_000_000; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		now, err := processCPU(pid)
		if err != nil {
			t.Fatal(err)
		}
		if now > start {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("CPU time stayed at %v while working (%d)", time.Duration(start), x)
		}
	}
	if hwm, err := peakRSS(pid); err != nil || hwm <= 0 {
		t.Errorf("peakRSS = %v, %v", hwm, err)
	}
	if _, err := processCPU(1 << 30); err == nil {
		t.Errorf("processCPU of a pid that cannot exist succeeded")
	}
}

func TestPerGiB(t *testing.T) {
	if got := perGiB(cpuTime(3*time.Second), 2<<30); got != 1.5 {
		t.Errorf("3 s over 2 GiB = %v s/GiB, want 1.5", got)
	}
	if got := perGiB(cpuTime(time.Second), 0); got != 0 {
		t.Errorf("per GiB of nothing = %v, want 0", got)
	}
}
