// convert --bitmaps, info and measure of images with bitmaps, against qemu-img: the same
// output and status, and a converted image holding the same bitmaps with the same bits.
package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// convertBitmapsCases: convert --bitmaps, in the images of bitmapImages.
func convertBitmapsCases(t *testing.T, dir string) {
	for _, a := range []string{
		"--bitmaps -O qcow2 base.qcow2 out.qcow2",
		"--bitmaps -O qcow2 src.qcow2 out.qcow2",
		"--bitmaps -c -O qcow2 base.qcow2 out.qcow2",
		"--bitmaps -O qcow2 -o cluster_size=2M src.qcow2 out.qcow2",
		"--bitmaps --skip-broken-bitmaps -O qcow2 inuse.qcow2 out.qcow2",
		"--bitmaps -n -O qcow2 base.qcow2 nzz.qcow2",
		"--bitmaps -O qcow2 stale.qcow2 out.qcow2",
		// Refusals.
		"--bitmaps -O qcow2 inuse.qcow2 out.qcow2",
		"--bitmaps -O raw base.qcow2 out.raw",
		"--bitmaps -O qcow2 -o compat=0.10 base.qcow2 out.qcow2",
		"--bitmaps -O qcow2 base.qcow2 src.qcow2 out.qcow2",
		"--bitmaps -f raw -O qcow2 raw.img out.qcow2",
		"--bitmaps -O qcow2 v2.qcow2 out.qcow2",
		"--bitmaps -c -O raw base.qcow2 out.raw",
		"--skip-broken-bitmaps -O qcow2 base.qcow2 out.qcow2",
		"--skip-broken-bitmaps --target-is-zero -O qcow2 base.qcow2 out.qcow2",
		"--bitmaps -n -O qcow2 base.qcow2 nb0.qcow2",
		"--bitmaps -n -O qcow2 base.qcow2 n128.qcow2",
	} {
		t.Run(a, func(t *testing.T) {
			t.Parallel()
			convertBitmapsMatchesQemu(t, dir, bitmapImageNames, strings.Fields(a))
		})
	}
}

// convertBitmapsMatchesQemu runs convert with args in two directories holding copies of the
// images it names (qemu-img in one, qnbd-img in the other), compares the output, and then the
// target, when either made or changed one.
func convertBitmapsMatchesQemu(t *testing.T, src string, images, args []string) {
	var used []string
	for _, img := range images {
		if slices.Contains(args, img) {
			used = append(used, img)
		}
	}
	qdir, odir := isolated(t, src, used...), isolated(t, src, used...)
	want := qemu(t, qdir, append([]string{"convert"}, args...)...)
	got := ours(t, odir, append([]string{"convert"}, args...)...)
	if got != want {
		t.Errorf("convert %q:\nqemu-img: %v\nqnbd-img: %v", args, want, got)
	}
	out := args[len(args)-1]
	qout, oout := filepath.Join(qdir, out), filepath.Join(odir, out)
	if _, err := os.Stat(qout); err != nil || !strings.HasSuffix(out, ".qcow2") {
		return
	}
	sameBitmaps(t, "", qout, oout, "")
}

// bitmapInfoCases: qemu-img info (human and JSON, with the backing chain) and measure of
// images with enabled, disabled and in-use bitmaps.
func bitmapInfoCases(t *testing.T, dir string) {
	var cases [][]string
	for _, img := range []string{"base.qcow2", "inuse.qcow2", "src.qcow2", "stale.qcow2"} {
		cases = append(cases, []string{"info", img}, []string{"info", "--output=json", img},
			[]string{"measure", img}, []string{"measure", "--output=json", "-O", "qcow2", img},
			[]string{"measure", "-O", "qcow2", "-o", "cluster_size=4k", img},
			[]string{"measure", "-O", "qcow2", "-o", "compat=0.10", img})
	}
	cases = append(cases, []string{"info", "--backing-chain", "over.qcow2"},
		[]string{"info", "--backing-chain", "--output=json", "over.qcow2"},
		[]string{"measure", "-O", "qcow2", "over.qcow2"})
	for _, c := range cases {
		t.Run(strings.Join(c, " "), func(t *testing.T) {
			t.Parallel()
			same(t, dir, c...)
		})
	}
}
