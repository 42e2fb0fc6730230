// Error replies byte for byte: every request a client can get wrong (read-only, out of
// range, misaligned, too large, bad flags, unknown command, no metadata context...) is sent
// to qnbd and to qemu-nbd serving the same image, in simple and structured mode, and the
// reply bytes and whether the connection survives must be the same (docs/qemu-nbd-fidelity.md).
package e2e

import (
	"fmt"
	"path/filepath"
	"testing"

	nbd "github.com/qnbd/qnbd/server"
)

// errCase is one request of the error table.
type errCase struct {
	name    string
	typ     nbd.Cmd
	flags   nbd.CmdFlags
	off     uint64
	length  uint64
	payload int    // WRITE payload bytes actually sent
	meta    bool   // negotiate base:allocation first (structured mode only)
	only    string // "ro" or "rw": run on read-only or writable exports only; "" both
}

// fidelitySize is the exports' size: larger than the 32 MiB maximum payload so that a long
// TRIM fits inside.
const fidelitySize = 64 << 20

func errCases() []errCase {
	const size = fidelitySize
	const big = nbd.MaxPayload + 512
	return []errCase{
		{name: "write", typ: nbd.CmdWrite, length: 512, payload: 512},
		{name: "write-fua", typ: nbd.CmdWrite, flags: nbd.CmdFlagFUA, length: 512, payload: 512},
		{name: "write-empty", typ: nbd.CmdWrite},
		{name: "write-unaligned", typ: nbd.CmdWrite, off: 1, length: 3, payload: 3},
		{name: "write-past-end", typ: nbd.CmdWrite, off: size - 256, length: 512, payload: 512},
		{name: "write-at-end", typ: nbd.CmdWrite, off: size, length: 1, payload: 1},
		{name: "write-bad-flag", typ: nbd.CmdWrite, flags: nbd.CmdFlagDF, length: 512, payload: 512},
		{name: "trim", typ: nbd.CmdTrim, length: 4096},
		{name: "trim-empty", typ: nbd.CmdTrim},
		{name: "trim-unaligned", typ: nbd.CmdTrim, off: 7, length: 9},
		{name: "trim-past-end", typ: nbd.CmdTrim, off: size - 512, length: 1024},
		{name: "trim-long", typ: nbd.CmdTrim, length: big},
		{name: "trim-bad-flag", typ: nbd.CmdTrim, flags: nbd.CmdFlagNoHole, length: 512},
		{name: "zero", typ: nbd.CmdWriteZeroes, length: 4096},
		{name: "zero-nohole", typ: nbd.CmdWriteZeroes, flags: nbd.CmdFlagNoHole, length: 4096},
		{name: "zero-fast", typ: nbd.CmdWriteZeroes, flags: nbd.CmdFlagFastZero, length: 4096},
		{name: "zero-empty", typ: nbd.CmdWriteZeroes},
		{name: "zero-past-end", typ: nbd.CmdWriteZeroes, off: size - 512, length: 1024},
		{name: "zero-long", typ: nbd.CmdWriteZeroes, length: big},
		{name: "zero-bad-flag", typ: nbd.CmdWriteZeroes, flags: nbd.CmdFlagReqOne, length: 512},
		{name: "read-past-end", typ: nbd.CmdRead, off: size - 256, length: 512},
		{name: "read-at-end", typ: nbd.CmdRead, off: size, length: 1},
		{name: "read-beyond-end", typ: nbd.CmdRead, off: size + 4096, length: 0},
		{name: "read-empty-at-end", typ: nbd.CmdRead, off: size},
		{name: "read-empty", typ: nbd.CmdRead},
		{name: "read-unaligned", typ: nbd.CmdRead, off: 1, length: 3},
		{name: "read-overflow", typ: nbd.CmdRead, off: 1<<64 - 512, length: 1024},
		{name: "read-too-long", typ: nbd.CmdRead, length: big},
		{name: "read-too-long-df", typ: nbd.CmdRead, flags: nbd.CmdFlagDF, length: big},
		{name: "read-fua", typ: nbd.CmdRead, flags: nbd.CmdFlagFUA, length: 512},
		{name: "read-df", typ: nbd.CmdRead, flags: nbd.CmdFlagDF, length: 512},
		{name: "read-bad-flag", typ: nbd.CmdRead, flags: nbd.CmdFlagNoHole, length: 512},
		{name: "read-unknown-flag", typ: nbd.CmdRead, flags: 1 << 9, length: 512},
		{name: "cache", typ: nbd.CmdCache, length: 4096},
		{name: "cache-empty", typ: nbd.CmdCache},
		{name: "cache-past-end", typ: nbd.CmdCache, off: size - 512, length: 1024},
		{name: "cache-too-long", typ: nbd.CmdCache, length: big},
		{name: "cache-bad-flag", typ: nbd.CmdCache, flags: nbd.CmdFlagDF, length: 512},
		{name: "flush", typ: nbd.CmdFlush},
		{name: "flush-with-range", typ: nbd.CmdFlush, off: 512, length: 512},
		{name: "flush-bad-flag", typ: nbd.CmdFlush, flags: nbd.CmdFlagNoHole},
		{name: "status-no-context", typ: nbd.CmdBlockStatus, length: 4096},
		{name: "status", typ: nbd.CmdBlockStatus, length: 4096, meta: true},
		{name: "status-empty", typ: nbd.CmdBlockStatus, meta: true},
		{name: "status-past-end", typ: nbd.CmdBlockStatus, off: size - 512, length: 1024, meta: true},
		{name: "status-beyond-end", typ: nbd.CmdBlockStatus, off: size + 512, length: 512, meta: true},
		{name: "status-bad-flag", typ: nbd.CmdBlockStatus, flags: nbd.CmdFlagDF, length: 512, meta: true},
		{name: "status-long", typ: nbd.CmdBlockStatus, length: size, meta: true},
		{name: "resize", typ: nbd.CmdResize, length: 512},
		{name: "unknown-command", typ: 99, off: 512, length: 512},
	}
}

// TestErrorRepliesMatchQemuNBD runs the error table against qnbd and qemu-nbd serving the
// same qcow2 and raw image, read-only and writable (each server on its own copy), in simple
// and structured mode.
func TestErrorRepliesMatchQemuNBD(t *testing.T) {
	for _, format := range []string{"qcow2", "raw"} {
		for _, ro := range []bool{true, false} {
			kind := "rw"
			if ro {
				kind = "ro"
			}
			t.Run(format+"-"+kind, func(t *testing.T) {
				t.Parallel()
				q, ref := startPair(t, format, ro)
				for _, mode := range []wireMode{wireSimple, wireStructured} {
					for i, tc := range errCases() {
						if tc.only != "" && tc.only != kind || tc.meta && mode == wireSimple {
							continue
						}
						what := fmt.Sprintf("%s %s", modeName(mode), tc.name)
						req := nbd.Request{Type: tc.typ, Flags: tc.flags, Offset: tc.off, Length: tc.length,
							Cookie: uint64(100 + i)}
						payload := make([]byte, tc.payload)
						for k := range payload {
							payload[k] = byte(i + k)
						}
						got := exchangeOnce(t, q, mode, tc.meta, req, payload)
						want := exchangeOnce(t, ref, mode, tc.meta, req, payload)
						sameOutcome(t, what, got, want)
					}
				}
			})
		}
	}
}

// startPair starts qnbd and qemu-nbd on copies of one fresh fidelitySize image of format,
// with some data written, read-only or not.
func startPair(t *testing.T, format string, ro bool) (q, ref *server) {
	t.Helper()
	dir := t.TempDir()
	var img string
	if format == "qcow2" {
		img = newQcow2(t, dir, fmt.Sprint(fidelitySize), "")
	} else {
		img = newRaw(t, dir, fidelitySize)
	}
	// Whole clusters: the block status of partly written clusters is not what this test is about.
	qemuIO(t, format, img, []string{"write -q -P 0x5a 0 64k", "write -q -P 0x33 1M 64k"})
	imgRef := filepath.Join(dir, "ref."+format)
	copyFile(t, img, imgRef)
	args := []string{"-f", format}
	if ro {
		args = append(args, "-r")
	}
	q = startQnbd(t, serverConfig{Args: append(args, img)})
	ref = startQemuNBD(t, serverConfig{Args: append(args, imgRef)})
	return q, ref
}

// exchangeOnce runs one exchange on a connection of its own (servers start with -e 1).
func exchangeOnce(t *testing.T, s *server, mode wireMode, meta bool, req nbd.Request, payload []byte) wireOutcome {
	t.Helper()
	c := sessionFor(t, s, mode, meta)
	defer c.close()
	return c.exchange(req, payload)
}

// sessionFor opens a connection to s in mode, with base:allocation selected when meta is set.
func sessionFor(t *testing.T, s *server, mode wireMode, meta bool) *rawConn {
	t.Helper()
	c := dialRaw(t, "unix", s.Sock)
	if meta {
		c.negotiate(mode, "", "base:allocation")
	} else {
		c.negotiate(mode, "")
	}
	return c
}
