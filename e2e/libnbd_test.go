// libnbd (the reference C client, through the cgo binding) against qnbd: many asynchronous
// requests in flight, structured reads, block status, FUA, flush and multi-conn.
package e2e

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/e2e/libnbd"
)

// writableFormats are the image formats the writing libnbd tests run on.
var writableFormats = []string{"raw", "qcow2"}

// formatServed reports whether format is in writableFormats.
func formatServed(format string) bool { return slices.Contains(writableFormats, format) }

// newImage creates an empty image of the given format and size (MiB) for a writing test.
// qcow2 images use 64 KiB clusters unless opts says otherwise.
func newImage(t *testing.T, format string, sizeMiB int64, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if format == "raw" {
		return newRaw(t, dir, sizeMiB<<20)
	}
	return newQcow2(t, dir, fmt.Sprintf("%dM", sizeMiB), opts)
}

// finishImage stops s and checks the image the test wrote: qemu-img check exit 0 for qcow2.
func finishImage(t *testing.T, s *server, format, path string) {
	t.Helper()
	s.Stop()
	if format == "qcow2" {
		requireClean(t, path)
	}
}

// TestLibnbdAioManyInFlight queues 64 writes of different sizes and alignments at once,
// retires them in whatever order they complete, then queues 64 reads at once and verifies
// every byte, on one connection.
func TestLibnbdAioManyInFlight(t *testing.T) {
	for _, format := range writableFormats {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			img := newImage(t, format, 64, "")
			s := startQnbd(t, serverConfig{Race: true, Args: []string{"-f", format, img}})
			h := connect(t, s, "", nil)

			const n = 64
			type req struct {
				off int64
				buf []byte
			}
			reqs := make([]req, n)
			for i := range reqs {
				// Distinct regions of 1 MiB; lengths from 1 byte to 192 KiB, odd offsets
				// inside the region, so partial clusters and cluster-crossing writes occur.
				off := int64(i)<<20 + int64(i*4099%65536)
				size := 1 + (i*37171)%(192<<10)
				reqs[i] = req{off: off, buf: stamp(byte(i+1), off, size)}
			}
			cookies := map[libnbd.Cookie]int{}
			for i, r := range reqs {
				c, err := h.AioPwrite(r.buf, uint64(r.off), 0)
				if err != nil {
					t.Fatalf("aio write %d: %v", i, err)
				}
				cookies[c] = i
			}
			inflight, err := h.AioInFlight()
			if err != nil || inflight != n {
				t.Fatalf("in flight after queueing %d writes: %d, %v", n, inflight, err)
			}
			for range n {
				c, err := h.AioWaitAny()
				if err != nil {
					t.Fatalf("aio write %d: %v", cookies[c], err)
				}
				delete(cookies, c)
			}
			if len(cookies) != 0 {
				t.Fatalf("%d writes never completed", len(cookies))
			}

			reads := make([][]byte, n)
			for i, r := range reqs {
				reads[i] = make([]byte, len(r.buf))
				c, err := h.AioPread(reads[i], uint64(r.off), 0)
				if err != nil {
					t.Fatalf("aio read %d: %v", i, err)
				}
				cookies[c] = i
			}
			for range n {
				c, err := h.AioWaitAny()
				if err != nil {
					t.Fatalf("aio read %d: %v", cookies[c], err)
				}
				i := cookies[c]
				requireBytes(t, fmt.Sprintf("read %d", i), reqs[i].off, reads[i], reqs[i].buf)
				delete(cookies, c)
			}
			// The bytes between the writes were never written and read as zeros.
			gap := make([]byte, 4096)
			if err := h.Pread(gap, uint64(reqs[1].off)-4096, 0); err != nil {
				t.Fatal(err)
			}
			requireBytes(t, "gap", reqs[1].off-4096, gap, make([]byte, 4096))
			h.Close()
			finishImage(t, s, format, img)
		})
	}
}

// TestLibnbdStructuredRead reads a range that is part data, part never written with
// structured replies: the chunks must tile the range exactly, the data chunks carry the
// data, the unwritten part reads as zeros, and a DF read comes back in one data chunk.
func TestLibnbdStructuredRead(t *testing.T) {
	for _, format := range writableFormats {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			img := newImage(t, format, 16, "")
			s := startQnbd(t, serverConfig{Args: []string{"-f", format, img}})
			h := connect(t, s, "", nil)
			if ok, err := h.GetStructuredRepliesNegotiated(); err != nil || !ok {
				t.Fatalf("structured replies negotiated = %v, %v", ok, err)
			}
			if ok, err := h.CanDF(); err != nil || !ok {
				t.Errorf("can_df = %v, %v", ok, err)
			}
			// Data at [1 MiB, 1 MiB+192 KiB) and [3 MiB, 3 MiB+64 KiB); the rest of
			// [0, 4 MiB) is never written.
			d1 := stamp(7, 1<<20, 192<<10)
			d2 := stamp(8, 3<<20, 64<<10)
			if err := h.Pwrite(d1, 1<<20, 0); err != nil {
				t.Fatal(err)
			}
			if err := h.Pwrite(d2, 3<<20, 0); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 4<<20)
			copy(want[1<<20:], d1)
			copy(want[3<<20:], d2)

			got := make([]byte, len(want))
			var chunks []libnbd.Chunk
			err := h.PreadStructured(got, 0, 0, func(c libnbd.Chunk) error {
				chunks = append(chunks, c)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			requireBytes(t, "structured read", 0, got, want)
			requireTiling(t, chunks, 0, uint64(len(want)))
			for _, c := range chunks {
				if c.Status == libnbd.ReadError {
					t.Errorf("error chunk %+v", c)
				}
			}
			// A chunk that covers written data must be a data chunk.
			for _, c := range chunks {
				if c.Status == libnbd.ReadHole && overlaps(c.Offset, c.Length, 1<<20, 192<<10) {
					t.Errorf("hole chunk %+v over written data", c)
				}
			}

			chunks = chunks[:0]
			got = make([]byte, 1<<20)
			err = h.PreadStructured(got, 512<<10, libnbd.CmdFlagDF, func(c libnbd.Chunk) error {
				chunks = append(chunks, c)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			requireBytes(t, "DF read", 512<<10, got, want[512<<10:512<<10+1<<20])
			if len(chunks) != 1 || chunks[0].Status != libnbd.ReadData || chunks[0].Offset != 512<<10 || chunks[0].Length != 1<<20 {
				t.Errorf("DF read chunks = %+v, want one data chunk of the whole range", chunks)
			}
			h.Close()
			finishImage(t, s, format, img)
		})
	}
}

// requireTiling requires chunks to cover [off, off+n) exactly once.
func requireTiling(t *testing.T, chunks []libnbd.Chunk, off, n uint64) {
	t.Helper()
	covered := make(map[uint64]uint64) // start -> length
	var total uint64
	for _, c := range chunks {
		if c.Status == libnbd.ReadError {
			continue
		}
		if c.Offset < off || c.Offset+c.Length > off+n || c.Length == 0 {
			t.Errorf("chunk %+v outside [%d, %d)", c, off, off+n)
		}
		covered[c.Offset] = c.Length
		total += c.Length
	}
	for pos := off; pos < off+n; {
		l, ok := covered[pos]
		if !ok {
			t.Errorf("no chunk starts at %d (chunks %+v)", pos, chunks)
			return
		}
		pos += l
	}
	if total != n {
		t.Errorf("chunks cover %d bytes, want %d", total, n)
	}
}

func overlaps(a, alen, b, blen uint64) bool { return a < b+blen && b < a+alen }

// TestLibnbdFuaFlushZeroTrim exercises the commands beyond read and write through libnbd:
// FUA writes, flush, write-zeroes with and without NO_HOLE and FAST_ZERO, trim and cache,
// checking the bytes and base:allocation afterwards.
func TestLibnbdFuaFlushZeroTrim(t *testing.T) {
	for _, format := range writableFormats {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			img := newImage(t, format, 16, "")
			s := startQnbd(t, serverConfig{Args: []string{"-f", format, "--discard=unmap", img}})
			h := connect(t, s, "", withContexts(libnbd.ContextBaseAllocation))
			for what, f := range map[string]func() (bool, error){
				"can_fua": h.CanFua, "can_flush": h.CanFlush, "can_trim": h.CanTrim,
				"can_zero": h.CanZero, "can_fast_zero": h.CanFastZero, "can_cache": h.CanCache,
			} {
				if ok, err := f(); err != nil || !ok {
					t.Errorf("%s = %v, %v", what, ok, err)
				}
			}
			if ok, err := h.CanMetaContext(libnbd.ContextBaseAllocation); err != nil || !ok {
				t.Fatalf("base:allocation negotiated = %v, %v", ok, err)
			}

			const mib = 1 << 20
			model := make([]byte, 16*mib)
			write := func(off int64, p []byte, flags uint32) {
				t.Helper()
				if err := h.Pwrite(p, uint64(off), flags); err != nil {
					t.Fatalf("write %d+%d flags %#x: %v", off, len(p), flags, err)
				}
				copy(model[off:], p)
			}
			zero := func(off, n int64, flags uint32) {
				t.Helper()
				if err := h.Zero(uint64(n), uint64(off), flags); err != nil {
					t.Fatalf("zero %d+%d flags %#x: %v", off, n, flags, err)
				}
				clear(model[off : off+n])
			}
			write(0, stamp(1, 0, 4*mib), libnbd.CmdFlagFUA)
			write(5*mib+123, stamp(2, 5*mib+123, 70000), 0)
			must(t, h.Flush(0))
			write(8*mib, stamp(3, 8*mib, 4*mib), 0)
			zero(mib, mib, 0)                            // may punch a hole
			zero(2*mib+4096, 8192, libnbd.CmdFlagNoHole) // must stay allocated
			zero(3*mib, mib, libnbd.CmdFlagFUA)          // durable
			zero(8*mib+100, 1000, 0)                     // inside a cluster
			// What a trimmed range reads as is unspecified by NBD: trim, then zero it.
			must(t, h.Trim(2*mib, 10*mib, 0))
			zero(10*mib, 2*mib, 0)
			// FAST_ZERO may fail with ENOTSUP (then nothing changed), or zero the range.
			fastOff := int64(12 * mib)
			write(fastOff, stamp(4, fastOff, mib), 0)
			switch err := h.Zero(mib, uint64(fastOff), libnbd.CmdFlagFastZero); {
			case err == nil:
				clear(model[fastOff : fastOff+mib])
			case !errors.Is(err, syscall.ENOTSUP):
				t.Fatalf("fast zero: %v, want success or ENOTSUP", err)
			}
			must(t, h.Cache(4*mib, 0, 0))
			must(t, h.Flush(0))

			got := make([]byte, len(model))
			for off := 0; off < len(got); off += 4 * mib {
				must(t, h.Pread(got[off:off+4*mib], uint64(off), 0))
			}
			requireBytes(t, "after zero/trim", 0, got, model)

			// base:allocation: the data written and never zeroed is not a hole, and any
			// extent flagged zero reads as zeros.
			exts := blockStatus(t, h, libnbd.ContextBaseAllocation)
			for _, off := range []uint64{0, 5*mib + 4096, 9 * mib} {
				if f := flagsAt(exts, off); f&libnbd.StateHole != 0 || f&libnbd.StateZero != 0 {
					t.Errorf("base:allocation at %d = %d, want data", off, f)
				}
			}
			for _, e := range exts {
				if e.Flags&libnbd.StateZero != 0 {
					if i := firstDiff(model[e.Off:e.Off+e.Len], make([]byte, e.Len)); i >= 0 {
						t.Errorf("extent %v is flagged zero but byte %d is %#x", e, e.Off+uint64(i), model[e.Off+uint64(i)])
					}
				}
			}
			// The never-written tail is a hole that reads as zeros.
			if f := flagsAt(exts, 15*mib); f != libnbd.StateHole|libnbd.StateZero {
				t.Errorf("base:allocation of the unwritten tail = %d, want hole|zero", f)
			}
			h.Close()
			finishImage(t, s, format, img)
		})
	}
}

// TestLibnbdMultiConn opens four handles on one export, each writing its own region with
// many requests in flight; once every write has been answered, one handle flushes and
// another reads everything back.
func TestLibnbdMultiConn(t *testing.T) {
	for _, format := range writableFormats {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			img := newImage(t, format, 64, "")
			s := startQnbd(t, serverConfig{Race: true, Args: []string{"-f", format, "-e", "4", img}})
			const conns = 4
			hs := make([]*libnbd.Handle, conns)
			for i := range hs {
				hs[i] = connect(t, s, "", nil)
				if ok, err := hs[i].CanMultiConn(); err != nil || !ok {
					t.Fatalf("can_multi_conn = %v, %v", ok, err)
				}
			}
			// Each handle owns 16 MiB and writes 32 requests of 256 KiB + 512 bytes, all in
			// flight at once, from its own goroutine.
			const region = 16 << 20
			const reqLen = 256<<10 + 512
			errs := make(chan error, conns)
			for i, h := range hs {
				go func() {
					var cs []libnbd.Cookie
					for j := range 32 {
						off := int64(i)*region + int64(j)*(region/32)
						c, err := h.AioPwrite(stamp(byte(10+i), off, reqLen), uint64(off), 0)
						if err != nil {
							errs <- err
							return
						}
						cs = append(cs, c)
					}
					for _, c := range cs {
						if err := h.AioWait(c); err != nil {
							errs <- fmt.Errorf("handle %d: %w", i, err)
							return
						}
					}
					errs <- nil
				}()
			}
			for range conns {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			must(t, hs[0].Flush(0))
			got := make([]byte, reqLen)
			for i := range conns {
				for j := range 32 {
					off := int64(i)*region + int64(j)*(region/32)
					must(t, hs[conns-1].Pread(got, uint64(off), 0))
					requireBytes(t, fmt.Sprintf("handle %d write %d", i, j), off, got, stamp(byte(10+i), off, reqLen))
				}
			}
			for _, h := range hs {
				h.Close()
			}
			finishImage(t, s, format, img)
		})
	}
}

// TestLibnbdReadOnly checks that a -r export says so and refuses writes with EINVAL, as
// qemu-nbd 7.2 does (libnbd's own tests expect it).
func TestLibnbdReadOnly(t *testing.T) {
	t.Parallel()
	img := newImage(t, "raw", 4, "")
	s := startQnbd(t, serverConfig{Args: []string{"-f", "raw", "-r", img}})
	h := connect(t, s, "", nil)
	if ro, err := h.IsReadOnly(); err != nil || !ro {
		t.Fatalf("is_read_only = %v, %v", ro, err)
	}
	// libnbd refuses a write on a read-only export itself unless strict mode is relaxed.
	must(t, h.SetStrictMode(0))
	err := h.Pwrite(make([]byte, 512), 0, 0)
	if !errors.Is(err, syscall.EINVAL) {
		t.Errorf("write to a read-only export: %v, want EINVAL", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
