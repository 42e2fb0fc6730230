// qnbd-img map against qemu-img map, byte for byte, on the shapes where QEMU reports a host
// offset without data (zero clusters that keep their allocation, preallocated clusters,
// unallocated subclusters of an allocated cluster) or data without one (compressed
// clusters), and on a chain of three layers mixing them.
package main

import (
	"strings"
	"testing"
)

// mapShapes builds the images in dir and returns their names. qemu-io commands are written
// with '_' for their spaces.
func mapShapes(t *testing.T, dir string) []string {
	t.Helper()
	for _, line := range []string{
		"qemu-img create -q -f qcow2 z.qcow2 2M",
		"qemu-io -c write_-P_1_0_512k -c write_-z_0_64k -c write_-z_-u_64k_64k -c write_-z_1M_64k -c write_-z_196k_60k z.qcow2",
		"qemu-img create -q -f qcow2 -o preallocation=metadata pm.qcow2 2M",
		"qemu-io -c write_-P_3_64k_64k -c write_-z_256k_64k -c write_-z_-u_384k_64k pm.qcow2",
		"qemu-img create -q -f qcow2 -o preallocation=falloc pf.qcow2 2M",
		"qemu-io -c write_-P_3_64k_64k -c write_-z_256k_64k pf.qcow2",
		"qemu-img create -q -f qcow2 -o extended_l2=on x.qcow2 1M",
		"qemu-io -c write_-P_1_0_4k -c write_-P_2_12k_8k -c write_-z_40k_4k -c write_-P_3_128k_64k -c write_-z_136k_8k -c write_-z_-u_192k_64k x.qcow2",
		"qemu-img create -q -f qcow2 -o extended_l2=on,preallocation=metadata xpm.qcow2 1M",
		"qemu-io -c write_-P_1_4k_4k -c write_-z_64k_8k xpm.qcow2",
		"qemu-img create -q -f qcow2 src.qcow2 1M",
		"qemu-io -c write_-P_5_0_64k -c write_-P_6_192k_128k src.qcow2",
		"qemu-img convert -c -O qcow2 src.qcow2 c.qcow2",
		"qemu-io -c write_-P_8_196k_4k -c write_-z_256k_64k c.qcow2",
		"qemu-img create -q -f qcow2 base.qcow2 1M",
		"qemu-io -c write_-P_1_0_512k -c write_-z_64k_64k -c write_-z_-u_128k_64k base.qcow2",
		"qemu-img create -q -f qcow2 -o extended_l2=on -b base.qcow2 -F qcow2 mid.qcow2 2M",
		"qemu-io -c write_-P_2_196k_4k -c write_-z_256k_64k -c write_-z_1536k_64k mid.qcow2",
		"qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 3M",
		"qemu-io -c write_-P_3_448k_64k -c write_-z_0_32k -c write_-z_2560k_64k top.qcow2",
	} {
		args := strings.Fields(line)
		for i, a := range args {
			if i > 0 && args[i-1] == "-c" {
				args[i] = strings.ReplaceAll(a, "_", " ")
			}
		}
		sh(t, dir, args[0], args[1:]...)
	}
	return []string{"z.qcow2", "pm.qcow2", "pf.qcow2", "x.qcow2", "xpm.qcow2", "c.qcow2", "mid.qcow2", "top.qcow2"}
}

// TestMapShapesMatchQemu: JSON and human output, whole and windowed, are qemu-img's.
func TestMapShapesMatchQemu(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, img := range mapShapes(t, dir) {
		for _, args := range [][]string{
			{"map", "--output=json", img},
			{"map", img},
			{"map", "--output=json", "-s", "70000", "-l", "700000", img},
			{"map", "-s", "4k", "-l", "1M", img},
		} {
			same(t, dir, args...)
		}
	}
}
