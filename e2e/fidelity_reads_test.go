// Structured reads chunk for chunk: qnbd and qemu-nbd serve the same image, and the same
// READs (whole image, unaligned windows, with and without DF) must come back as the same
// sequence of OFFSET_DATA / OFFSET_HOLE chunks, byte for byte (docs/qemu-nbd-fidelity.md).
package e2e

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	nbd "github.com/qnbd/qnbd/server"
)

// readShape is an image to read back: its format, qemu-img create options, size and the
// qemu-io commands that fill it.
type readShape struct {
	name   string
	format string
	opts   string
	size   int64
	cmds   []string
	// base, when set, are the qemu-io commands of a backing file with 512-byte clusters.
	base []string
}

var readShapes = []readShape{
	// libnbd's interop test: 512 bytes of data, then a 512-byte hole.
	{name: "qcow2-512-data-hole", format: "qcow2", opts: "cluster_size=512", size: 1 << 20,
		cmds: []string{"write -q -P 1 0 512", "write -q -P 2 1024 512", "write -q -P 3 4096 1536"}},
	// Alternating 512-byte clusters across the 32 KiB L2 slices of a 512-byte-cluster image.
	{name: "qcow2-512-alternating", format: "qcow2", opts: "cluster_size=512", size: 1 << 20, cmds: alternating(30<<10, 36<<10, 512)},
	{name: "qcow2-512-zero-clusters", format: "qcow2", opts: "cluster_size=512", size: 1 << 20,
		cmds: []string{"write -q -P 5 0 4k", "write -q -z 1024 1024", "write -q -P 6 64k 512", "write -q -z 66k 2k"}},
	{name: "qcow2-64k-whole-clusters", format: "qcow2", opts: "", size: 4 << 20,
		cmds: []string{"write -q -P 7 0 64k", "write -q -P 8 256k 128k", "write -q -z 1M 64k", "write -q -P 9 3M 64k"}},
	{name: "qcow2-64k-compressed", format: "qcow2", opts: "", size: 4 << 20,
		cmds: []string{"write -q -c -P 1 0 64k", "write -q -c -P 2 64k 64k", "write -q -c -P 3 128k 64k", "write -q -P 4 192k 64k"}},
	{name: "qcow2-4k-over-512-backing", format: "qcow2", opts: "cluster_size=4096", size: 1 << 20,
		cmds: []string{"write -q -P 1 0 4k", "write -q -z 60k 8k", "write -q -P 2 100k 4k"},
		base: append(alternating(28<<10, 40<<10, 512), "write -q -P 9 96k 16k", "write -q -c -P 8 200k 2k")},
	{name: "raw-sparse", format: "raw", opts: "", size: 4 << 20,
		cmds: []string{"write -q -P 1 0 4k", "write -q -P 2 64k 8k", "write -q -P 3 1M 4k", "write -q -P 4 4190208 4k"}},
	{name: "raw-512-writes", format: "raw", opts: "", size: 1 << 20,
		cmds: []string{"write -q -P 1 0 512", "write -q -P 2 8k 512", "write -q -P 3 12k 4k"}},
}

// alternating writes 512-byte data clusters every other cluster over [from, to).
func alternating(from, to, step int64) []string {
	var cmds []string
	for off := from; off < to; off += 2 * step {
		cmds = append(cmds, fmt.Sprintf("write -q -P %d %d %d", 1+off/step%200, off, step))
	}
	return cmds
}

// readWindows are the reads compared on an image of size bytes.
func readWindows(size int64) [][2]uint64 {
	s := uint64(size)
	return [][2]uint64{
		{0, min(s, 1<<20)},
		{0, 1024},
		{0, 2048},
		{100, 5000},
		{511, 513},
		{1000, 70000},
		{30 << 10, 8 << 10},
		{s - 8192, 8192},
		{s - 1, 1},
	}
}

// TestStructuredReadsMatchQemuNBD reads every window of every shape from qnbd and qemu-nbd
// in structured mode, without and with DF, and requires the same reply bytes.
func TestStructuredReadsMatchQemuNBD(t *testing.T) {
	for _, sh := range readShapes {
		t.Run(sh.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var img string
			switch {
			case sh.base != nil:
				base := filepath.Join(dir, "base.qcow2")
				run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", base, strconv.FormatInt(sh.size, 10))
				qemuIO(t, "qcow2", base, sh.base)
				img = newQcow2(t, dir, strconv.FormatInt(sh.size, 10), sh.opts+",backing_file="+base+",backing_fmt=qcow2")
			case sh.format == "qcow2":
				img = newQcow2(t, dir, strconv.FormatInt(sh.size, 10), sh.opts)
			default:
				img = newRaw(t, dir, sh.size)
			}
			qemuIO(t, sh.format, img, sh.cmds)
			args := []string{"-r", "-f", sh.format, img}
			q := startQnbd(t, serverConfig{Args: args})
			ref := startQemuNBD(t, serverConfig{Args: args})
			for i, w := range readWindows(sh.size) {
				for _, flags := range []nbd.CmdFlags{0, nbd.CmdFlagDF} {
					req := nbd.Request{Type: nbd.CmdRead, Flags: flags, Cookie: uint64(i + 1), Offset: w[0], Length: w[1]}
					got := exchangeOnce(t, q, wireStructured, false, req, nil)
					want := exchangeOnce(t, ref, wireStructured, false, req, nil)
					if string(got.reply) != string(want.reply) || got.closed != want.closed {
						t.Errorf("READ [%d,+%d) flags %v: qnbd and qemu-nbd differ\nqnbd:     %s\nqemu-nbd: %s",
							w[0], w[1], flags, chunkList(got.reply), chunkList(want.reply))
					}
				}
			}
		})
	}
}

// chunkList renders a structured reply as its chunk types, offsets and lengths.
func chunkList(b []byte) string {
	var out []string
	for len(b) >= 20 {
		typ, n := nbd.ReplyType(wbe.Uint16(b[6:])), int(wbe.Uint32(b[16:]))
		if 20+n > len(b) {
			break
		}
		p := b[20 : 20+n]
		switch {
		case typ == nbd.ReplyTypeOffsetData && n >= 8:
			out = append(out, fmt.Sprintf("data[%d,+%d)", wbe.Uint64(p), n-8))
		case typ == nbd.ReplyTypeOffsetHole && n == 12:
			out = append(out, fmt.Sprintf("hole[%d,+%d)", wbe.Uint64(p), wbe.Uint32(p[8:])))
		default:
			out = append(out, fmt.Sprintf("%v(%d bytes)", typ, n))
		}
		b = b[20+n:]
	}
	return strings.Join(out, " ")
}
