// qnbd-img resize against qemu-img resize on copies of the same images.
package main

import (
	"bytes"
	"testing"
)

func TestResizeMatchesQemu(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rawImages(t, dir)
	qcow2Images(t, dir)
	for _, tc := range []struct {
		img  string
		args []string
	}{
		{"data.raw", []string{"-f", "raw", "+1M"}},
		{"data.raw", []string{"-f", "raw", "--shrink", "--", "-1M"}},
		{"data.raw", []string{"-f", "raw", "--shrink", "10M"}},
		{"data.raw", []string{"-f", "raw", "100M"}},
		{"data.raw", []string{"-f", "raw", "--shrink", "15M"}},
		{"data.raw", []string{"-f", "raw", "-q", "1G"}},
		{"data.raw", []string{"-f", "raw", "--preallocation=falloc", "17M"}},
		{"data.raw", []string{"-f", "raw", "--preallocation=full", "17M"}},
		{"data.raw", []string{"-f", "raw", "--preallocation=metadata", "17M"}},
		{"data.raw", []string{"-f", "raw", "1000"}},
		{"odd.raw", []string{"-f", "raw", "+0"}},
		{"base.qcow2", []string{"+1G"}},
		{"base.qcow2", []string{"--shrink", "--", "-8M"}},
		{"base.qcow2", []string{"--shrink", "1M"}},
		{"base.qcow2", []string{"-- -1M"}},
		{"base.qcow2", []string{"1000"}},
		{"top.qcow2", []string{"32M"}},
		{"v2.qcow2", []string{"16M"}},
		{"ext.qcow2", []string{"--shrink", "1040k"}},
		// Internal snapshots: qemu-img 7.2 grows and shrinks such images.
		{"snap.qcow2", []string{"16M"}},
		{"snap.qcow2", []string{"--shrink", "1M"}},
	} {
		sh(t, dir, "cp", "--sparse=always", tc.img, "q."+tc.img)
		sh(t, dir, "cp", "--sparse=always", tc.img, "o."+tc.img)
		want := qemu(t, dir, append(append([]string{"resize"}, tc.args[:len(tc.args)-1]...), "q."+tc.img, tc.args[len(tc.args)-1])...)
		got := ours(t, dir, append(append([]string{"resize"}, tc.args[:len(tc.args)-1]...), "o."+tc.img, tc.args[len(tc.args)-1])...)
		if (got.code == 0) != (want.code == 0) || got.stdout != want.stdout {
			t.Errorf("resize %s %q:\nqemu-img: %v\nqnbd-img: %v", tc.img, tc.args, want, got)
			continue
		}
		if want.code != 0 {
			continue
		}
		fmtArg := "qcow2"
		if tc.img[len(tc.img)-3:] == "raw" {
			fmtArg = "raw"
		}
		if r := qemu(t, dir, "compare", "-f", fmtArg, "-F", fmtArg, "q."+tc.img, "o."+tc.img); r.code != 0 {
			t.Errorf("resize %s %q: contents differ: %v", tc.img, tc.args, r)
		}
		wi := qemu(t, dir, "info", "-f", fmtArg, "q."+tc.img)
		gi := qemu(t, dir, "info", "-f", fmtArg, "o."+tc.img)
		line := func(s string) string { return string(bytes.SplitN([]byte(s), []byte("\n"), 4)[2]) }
		if line(wi.stdout) != line(gi.stdout) {
			t.Errorf("resize %s %q: %s vs %s", tc.img, tc.args, line(wi.stdout), line(gi.stdout))
		}
		if fmtArg == "qcow2" {
			if r := qemu(t, dir, "check", "o."+tc.img); r.code != 0 && tc.img != "dirty.qcow2" {
				t.Errorf("resize %s %q: check: %v", tc.img, tc.args, r)
			}
		}
	}
}
