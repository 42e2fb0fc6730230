// qnbd-img convert -c against qemu-img convert -c: the same contents, the same clusters
// compressed, an output no larger than 102% of qemu-img's, and the same refusals.
package main

import (
	"bytes"
	"crypto/rand"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mixedRaw writes a raw file of text-like (compressible), random (incompressible) and zero
// runs.
func mixedRaw(t *testing.T, path string) {
	t.Helper()
	r := mrand.New(mrand.NewPCG(3, 4))
	words := []string{"alpha ", "beta ", "gamma ", "qcow2 ", "cluster\n", "snapshot ", "delta "}
	var b bytes.Buffer
	for b.Len() < 3<<20 {
		b.WriteString(words[r.IntN(len(words))])
	}
	data := b.Bytes()[:3<<20]
	noise := make([]byte, 256<<10)
	rand.Read(noise)
	data = append(data, noise...)
	data = append(data, make([]byte, 512<<10)...)
	data = append(data, b.Bytes()[:100000]...) // a last, partial cluster
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// checkSummary is the "allocated, fragmented, compressed" line of qemu-img check.
func checkSummary(t *testing.T, dir, name string) string {
	t.Helper()
	r := qemu(t, dir, "check", name)
	if r.code != 0 {
		t.Fatalf("qemu-img check %s: %v", name, r)
	}
	for _, l := range strings.Split(r.stdout, "\n") {
		if strings.Contains(l, "compressed clusters") {
			return l
		}
	}
	t.Fatalf("no summary in qemu-img check output: %v", r)
	return ""
}

func TestConvertCompressedMatchesQemu(t *testing.T) {
	dq, do := t.TempDir(), t.TempDir()
	for _, d := range []string{dq, do} {
		mixedRaw(t, filepath.Join(d, "src.raw"))
	}
	for _, o := range []string{"cluster_size=65536", "compression_type=zstd", "cluster_size=4096", "compat=0.10"} {
		args := []string{"convert", "-c", "-f", "raw", "-O", "qcow2", "-o", o, "src.raw", "c.qcow2"}
		want, got := qemu(t, dq, args...), ours(t, do, args...)
		if got != want {
			t.Fatalf("%s: qnbd-img %v, qemu-img %v", o, got, want)
		}
		// Readable by QEMU, and what it reads is the source.
		sh(t, do, "qemu-img", "compare", "-f", "raw", "-F", "qcow2", "src.raw", "c.qcow2")
		if w, g := checkSummary(t, dq, "c.qcow2"), checkSummary(t, do, "c.qcow2"); w != g {
			t.Errorf("%s: qemu-img check of ours says %q, of qemu-img's %q", o, g, w)
		}
		qs, err := os.Stat(filepath.Join(dq, "c.qcow2"))
		if err != nil {
			t.Fatal(err)
		}
		ourSt, err := os.Stat(filepath.Join(do, "c.qcow2"))
		if err != nil {
			t.Fatal(err)
		}
		// QEMU's file ends with the last compressed byte, ours with the cluster holding it:
		// one cluster of slack, which only matters for images this small.
		if float64(ourSt.Size()) > max(1.02*float64(qs.Size()), float64(qs.Size()+65536)) {
			t.Errorf("%s: our output is %d bytes, qemu-img's %d (more than 102%%)", o, ourSt.Size(), qs.Size())
		}
	}
	// QEMU's compressed image read by us, recompressed by us.
	same(t, dq, "compare", "-f", "raw", "src.raw", "c.qcow2")
	for _, args := range [][]string{
		{"convert", "-c", "-f", "raw", "-O", "raw", "src.raw", "r.raw"},
		{"convert", "-c", "-C", "-f", "raw", "-O", "qcow2", "src.raw", "x.qcow2"},
		{"convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compat=0.10,compression_type=zstd", "src.raw", "y.qcow2"},
	} {
		same(t, dq, args...)
	}
}
