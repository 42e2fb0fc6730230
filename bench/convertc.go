// The convert -c rows: qnbd-img convert -c and qemu-img convert -c of the same realistic
// image, side by side (wall time, CPU time, output size).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// convertCResult is one tool's convert -c of the shared source image.
type convertCResult struct {
	Tool        string  `json:"tool"`
	Seconds     float64 `json:"seconds"`
	CPUSeconds  float64 `json:"cpu_seconds"`
	OutputBytes int64   `json:"output_bytes"`
	MiBps       float64 `json:"source_mib_per_s"`
	// SpeedupVsQemu and SizeVsQemu compare with qemu-img's row (qnbd-img's row only).
	SpeedupVsQemu float64 `json:"speedup_vs_qemu_img,omitempty"`
	SizeVsQemu    float64 `json:"size_vs_qemu_img,omitempty"`
	Error         string  `json:"error,omitempty"`
}

// convertSourceDirs are where the source file system's files come from: hard links to
// installed files (text, binaries, libraries), as varied as a real root file system.
var convertSourceDirs = []string{"/usr/share", "/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib/llvm-14", "/usr/lib/gcc", "/usr/lib/jvm", "/usr/lib/google-cloud-sdk"}

// makeConvertSource builds a raw ext4 image of size bytes (mkfs.ext4 -d) holding at least
// half its size of files, and returns its path and how many bytes of files it holds.
func makeConvertSource(ctx context.Context, dir string, size int64) (string, int64, error) {
	tree := filepath.Join(dir, "tree")
	if err := os.MkdirAll(tree, 0o755); err != nil {
		return "", 0, err
	}
	var have int64
	limit := size * 6 / 10
	for i, src := range convertSourceDirs {
		if have >= limit {
			break
		}
		n, err := dirBytes(src)
		if err != nil || n == 0 || have+n > size*8/10 {
			continue
		}
		dst := filepath.Join(tree, fmt.Sprintf("d%d", i))
		// Hard links when possible (instant, no space), a copy otherwise.
		if err := exec.CommandContext(ctx, "cp", "-al", src, dst).Run(); err != nil {
			_ = os.RemoveAll(dst)
			if out, err := exec.CommandContext(ctx, "cp", "-r", src, dst).CombinedOutput(); err != nil {
				return "", 0, fmt.Errorf("copy %s: %v: %s", src, err, out)
			}
		}
		have += n
	}
	if have < size/2 {
		return "", 0, fmt.Errorf("only %d bytes of files found for a %d-byte source image", have, size)
	}
	img := filepath.Join(dir, "source.raw")
	if err := os.Truncate(img, 0); err != nil && !os.IsNotExist(err) {
		return "", 0, err
	}
	f, err := os.Create(img)
	if err != nil {
		return "", 0, err
	}
	f.Close()
	if err := os.Truncate(img, size); err != nil {
		return "", 0, err
	}
	if out, err := exec.CommandContext(ctx, "mkfs.ext4", "-q", "-F", "-d", tree, img).CombinedOutput(); err != nil {
		return "", 0, fmt.Errorf("mkfs.ext4 -d: %v: %s", err, out)
	}
	return img, have, os.RemoveAll(tree)
}

// dirBytes is the size of the regular files under dir.
func dirBytes(dir string) (int64, error) {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// runConvertC runs both tools on one source image and prints their rows.
func runConvertC(ctx context.Context, cfg config, w io.Writer, dir string) []convertCResult {
	dir = filepath.Join(dir, "convert-c")
	defer os.RemoveAll(dir)
	src, files, err := makeConvertSource(ctx, dir, cfg.convertSize)
	if err != nil {
		fmt.Fprintf(w, "convert-c            FAILED: %v\n", err)
		return []convertCResult{{Tool: "source", Error: err.Error()}}
	}
	qnbdImg := filepath.Join(filepath.Dir(cfg.qnbd), "qnbd-img")
	var out []convertCResult
	for _, tool := range []string{"qemu-img", qnbdImg} {
		target := filepath.Join(dir, "out.qcow2")
		_ = os.Remove(target)
		r := convertCResult{Tool: filepath.Base(tool)}
		cmd := exec.CommandContext(ctx, tool, "convert", "-c", "-f", "raw", "-O", "qcow2", src, target)
		t0 := time.Now()
		b, err := cmd.CombinedOutput()
		r.Seconds = time.Since(t0).Seconds()
		if err != nil {
			r.Error = fmt.Sprintf("%v: %s", err, strings.TrimSpace(string(b)))
			fmt.Fprintf(w, "convert-c            %-9s FAILED: %s\n", r.Tool, r.Error)
			out = append(out, r)
			continue
		}
		st := cmd.ProcessState
		r.CPUSeconds = (st.UserTime() + st.SystemTime()).Seconds()
		if fi, err := os.Stat(target); err == nil {
			r.OutputBytes = fi.Size()
		}
		r.MiBps = float64(cfg.convertSize) / (1 << 20) / r.Seconds
		fmt.Fprintf(w, "convert-c            %-9s %7.1f s  %7.1f CPU s  %d bytes out\n", r.Tool, r.Seconds, r.CPUSeconds, r.OutputBytes)
		out = append(out, r)
	}
	if len(out) == 2 && out[0].Error == "" && out[1].Error == "" {
		out[1].SpeedupVsQemu = out[0].Seconds / out[1].Seconds
		out[1].SizeVsQemu = float64(out[1].OutputBytes) / float64(out[0].OutputBytes)
		fmt.Fprintf(w, "convert-c: %s image of ext4 holding %s of files: qnbd-img %.2fx qemu-img's speed, output %.1f%% of qemu-img's\n",
			formatSize(cfg.convertSize), formatSize(files), out[1].SpeedupVsQemu, 100*out[1].SizeVsQemu)
	}
	return out
}
