// Block status against QEMU on the shapes where QEMU reports a host offset without data or
// data without one: zero clusters that keep their allocation, preallocated clusters,
// unallocated and zero subclusters of allocated clusters, compressed clusters, and backing
// chains of three layers mixing them.
package qcow2

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// statusShape is an image built by a script of qemu-img and qemu-io commands run in a
// directory; top is the image compared.
type statusShape struct {
	name   string
	script []string // each line: a command and its arguments, split on spaces
	top    string
}

func statusShapes() []statusShape {
	return []statusShape{
		// v3 zero flags: with the host offset kept (write -z over data) and without (-u, or
		// on an unallocated cluster); a partial zero write in a data cluster stays data.
		{name: "zero-flags", top: "z.qcow2", script: []string{
			"qemu-img create -q -f qcow2 z.qcow2 2M",
			"qemu-io -c write_-P_1_0_512k -c write_-z_0_64k -c write_-z_-u_64k_64k -c write_-z_1M_64k " +
				"-c write_-z_-u_1536k_64k -c write_-z_196k_60k -c write_-z_256k_128k z.qcow2",
		}},
		// Version 2 has no zero flag: a zero write over data writes zeros (data) or, with
		// unmap and no backing file, deallocates.
		{name: "zero-v2", top: "v2.qcow2", script: []string{
			"qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M",
			"qemu-io -c write_-P_1_0_256k -c write_-z_0_64k -c write_-z_-u_64k_64k -c write_-z_512k_64k v2.qcow2",
		}},
		{name: "prealloc-metadata-writes", top: "pm.qcow2", script: []string{
			"qemu-img create -q -f qcow2 -o preallocation=metadata pm.qcow2 2M",
			"qemu-io -c write_-P_3_64k_64k -c write_-z_256k_64k -c write_-z_-u_384k_64k -c write_-P_4_600k_4k pm.qcow2",
		}},
		{name: "prealloc-falloc-writes", top: "pf.qcow2", script: []string{
			"qemu-img create -q -f qcow2 -o preallocation=falloc pf.qcow2 2M",
			"qemu-io -c write_-P_3_64k_64k -c write_-z_256k_64k -c write_-z_-u_384k_64k pf.qcow2",
		}},
		{name: "prealloc-full", top: "pfull.qcow2", script: []string{
			"qemu-img create -q -f qcow2 -o preallocation=full pfull.qcow2 1M",
			"qemu-io -c write_-z_0_64k -c write_-P_5_128k_4k pfull.qcow2",
		}},
		// Extended L2: partially allocated clusters (the unallocated subclusters keep the
		// cluster's offset), zero subclusters of allocated and unallocated clusters.
		{name: "extl2-subclusters", top: "x.qcow2", script: []string{
			"qemu-img create -q -f qcow2 -o extended_l2=on x.qcow2 1M",
			"qemu-io -c write_-P_1_0_4k -c write_-P_2_12k_8k -c write_-z_40k_4k -c write_-P_3_128k_64k " +
				"-c write_-z_136k_8k -c write_-z_-u_160k_4k -c write_-z_-u_192k_64k -c write_-z_320k_6k x.qcow2",
		}},
		{name: "extl2-prealloc-metadata", top: "xpm.qcow2", script: []string{
			"qemu-img create -q -f qcow2 -o extended_l2=on,preallocation=metadata xpm.qcow2 1M",
			"qemu-io -c write_-P_1_4k_4k -c write_-z_64k_8k -c write_-z_-u_128k_64k xpm.qcow2",
		}},
		{name: "extl2-prealloc-falloc", top: "xpf.qcow2", script: []string{
			"qemu-img create -q -f qcow2 -o extended_l2=on,preallocation=falloc,cluster_size=128k xpf.qcow2 1M",
			"qemu-io -c write_-P_1_4k_4k -c write_-z_128k_8k xpf.qcow2",
		}},
		// Compressed clusters (data, no offset), then partly rewritten and zeroed.
		{name: "compressed-rewritten", top: "c.qcow2", script: []string{
			"qemu-img create -q -f qcow2 src.qcow2 1M",
			"qemu-io -c write_-P_5_0_64k -c write_-P_6_192k_128k -c write_-P_7_512k_64k src.qcow2",
			"qemu-img convert -c -O qcow2 src.qcow2 c.qcow2",
			"qemu-io -c write_-P_8_196k_4k -c write_-z_256k_64k -c write_-z_-u_512k_64k c.qcow2",
		}},
		{name: "datafile-zero-alloc", top: "df.qcow2", script: []string{
			"qemu-img create -q -f qcow2 -o data_file={dir}/df.data df.qcow2 1M",
			"qemu-io -c write_-P_1_0_256k -c write_-z_0_64k -c write_-z_-u_64k_64k -c write_-z_512k_64k df.qcow2",
		}},
		// Three layers, each shorter than the one above, with zero clusters (with and without
		// offset) at every level; the backing names are relative.
		{name: "chain-3", top: "top.qcow2", script: []string{
			"qemu-img create -q -f qcow2 base.qcow2 1M",
			"qemu-io -c write_-P_1_0_512k -c write_-z_64k_64k -c write_-z_-u_128k_64k -c write_-z_768k_64k base.qcow2",
			"qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 2M",
			"qemu-io -c write_-P_2_192k_64k -c write_-z_256k_64k -c write_-z_-u_320k_64k -c write_-z_1536k_64k mid.qcow2",
			"qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 3M",
			"qemu-io -c write_-P_3_448k_64k -c write_-z_0_32k -c write_-z_2560k_64k top.qcow2",
		}},
		// Extended L2 over a compressed base, with preallocated metadata.
		{name: "chain-extl2-prealloc-over-compressed", top: "xt.qcow2", script: []string{
			"qemu-img create -q -f qcow2 src.qcow2 1M",
			"qemu-io -c write_-P_5_0_512k src.qcow2",
			"qemu-img convert -c -O qcow2 src.qcow2 cbase.qcow2",
			"qemu-img create -q -f qcow2 -o extended_l2=on,preallocation=metadata -b cbase.qcow2 -F qcow2 xt.qcow2 2M",
			"qemu-io -c write_-P_9_4k_4k -c write_-z_72k_8k -c write_-z_-u_640k_64k xt.qcow2",
		}},
		// A raw base with holes under a qcow2 layer with zero clusters, under a top.
		{name: "chain-raw-bottom", top: "rt.qcow2", script: []string{
			"qemu-img create -q -f raw r.raw 1000000",
			"qemu-io -f raw -c write_-P_5_0_64k -c write_-P_6_300000_100000 r.raw",
			"qemu-img create -q -f qcow2 -b r.raw -F raw rm.qcow2 1M",
			"qemu-io -c write_-z_0_64k -c write_-P_7_128k_64k rm.qcow2",
			"qemu-img create -q -f qcow2 -o cluster_size=4k -b rm.qcow2 -F qcow2 rt.qcow2 2M",
			"qemu-io -c write_-P_8_4k_4k -c write_-z_-u_8k_4k rt.qcow2",
		}},
		// A top over an image with an external data file that has zero clusters.
		{name: "chain-over-datafile", top: "dt.qcow2", script: []string{
			"qemu-img create -q -f qcow2 -o data_file={dir}/db.data db.qcow2 1M",
			"qemu-io -c write_-P_1_0_256k -c write_-z_0_64k -c write_-z_-u_64k_64k db.qcow2",
			"qemu-img create -q -f qcow2 -b db.qcow2 -F qcow2 dt.qcow2 1M",
			"qemu-io -c write_-P_2_192k_4k dt.qcow2",
		}},
	}
}

// buildShape runs the shape's script in dir (qemu-io's commands are written with '_' for
// their spaces, {dir} stands for dir) and returns the top image's path. Data file names are
// given absolute: QEMU 7.2 opens a relative one from its working directory.
func buildShape(t *testing.T, dir string, s statusShape) string {
	t.Helper()
	for _, line := range s.script {
		args := strings.Fields(strings.ReplaceAll(line, "{dir}", dir))
		for i, a := range args {
			if i > 0 && args[i-1] == "-c" {
				args[i] = strings.ReplaceAll(a, "_", " ")
			}
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", line, err, out)
		}
	}
	return filepath.Join(dir, s.top)
}

// TestStatusShapesMatchQemu: MapStatus is exactly qemu-img map (every field, host offsets of
// zero and preallocated clusters and of unallocated subclusters included, and the files the
// human output names), BlockStatus exactly qemu-nbd's two contexts, on every shape.
func TestStatusShapesMatchQemu(t *testing.T) {
	for _, s := range statusShapes() {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			compareStatusWithQemu(t, buildShape(t, t.TempDir(), s))
		})
	}
}
