// kill -9 of qnbd in the middle of writes, then a restart: the image opens, qemu-img check
// finds at most leaks, and every write that was acknowledged and then flushed (or written
// with FUA) reads back; the other writes read back whole or not at all, never misplaced.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qnbd/qnbd/e2e/libnbd"
	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// Layout of the 64 MiB crash image: flushed writes, FUA writes, then slots written with
// many requests in flight while the server is killed.
const (
	crashSize     = 64 << 20
	crashFlushed  = 0       // [0, 8 MiB): 64 writes, then FLUSH
	crashFUA      = 8 << 20 // [8 MiB, 16 MiB): 32 FUA writes, no flush
	crashSlots    = 16 << 20
	crashSlotSize = 64 << 10 // one write per slot, 48 KiB at a slot-dependent offset
	crashSlotLen  = 48 << 10
)

// crashWrite is one write of the workload.
type crashWrite struct {
	off  int64
	data []byte
}

// slotWrite is the write to slot i of the in-flight region.
func slotWrite(i int) crashWrite {
	off := crashSlots + int64(i)*crashSlotSize + int64(i%7)*512
	return crashWrite{off: off, data: stamp(byte(100+i%100), off, crashSlotLen)}
}

// kill9Iterations is how many kill -9 runs TestKill9DuringWrites makes per image kind: two in
// make test; the test plan's soak (1,000 runs) is -e2e.kill9.iterations=250.
var kill9Iterations = flag.Int("e2e.kill9.iterations", 2, "kill -9 runs per image kind in TestKill9DuringWrites")

// TestKill9DuringWrites runs the crash workload a few times per image kind (one qcow2
// kind lazy-refcounts), killing qnbd with SIGKILL at a random moment while slot writes
// are in flight.
func TestKill9DuringWrites(t *testing.T) {
	type kind struct{ format, opts string }
	kinds := []kind{{"raw", ""}}
	if formatServed("qcow2") {
		kinds = append(kinds, kind{"qcow2", "cluster_size=65536"}, kind{"qcow2", "cluster_size=4096,lazy_refcounts=on"},
			kind{"qcow2", "cluster_size=512,refcount_bits=2"})
	}
	for ki, k := range kinds {
		for iter := range *kill9Iterations {
			t.Run(fmt.Sprintf("%s/%s/%d", k.format, k.opts, iter), func(t *testing.T) {
				t.Parallel()
				rng := rand.New(rand.NewPCG(uint64(iter), uint64(ki)))
				img := newImage(t, k.format, crashSize>>20, k.opts)
				kill9Once(t, k.format, img, strings.Contains(k.opts, "lazy_refcounts=on"), rng)
			})
		}
	}
}

func kill9Once(t *testing.T, format, img string, lazy bool, rng *rand.Rand) {
	s := startQnbd(t, serverConfig{Race: true, Args: []string{"-f", format, "-e", "2", img}})
	h := connect(t, s, "", nil)

	var durable []crashWrite
	for i := range 64 {
		off := crashFlushed + int64(i)*(128<<10) + int64(rng.IntN(64<<10))
		w := crashWrite{off: off, data: stamp(byte(i+1), off, 1+rng.IntN(64<<10))}
		must(t, h.Pwrite(w.data, uint64(w.off), 0))
		durable = append(durable, w)
	}
	must(t, h.Flush(0))
	for i := range 32 {
		off := crashFUA + int64(i)*(256<<10) + int64(rng.IntN(4096))
		w := crashWrite{off: off, data: stamp(byte(i+70), off, 512+rng.IntN(128<<10))}
		must(t, h.Pwrite(w.data, uint64(w.off), libnbd.CmdFlagFUA))
		durable = append(durable, w)
	}

	// A second connection keeps 32 slot writes in flight, flushing every 50 writes; a slot
	// write is durable once a flush sent after its reply has been answered.
	h2 := connect(t, s, "", nil)
	nslots := (crashSize - crashSlots) / crashSlotSize
	type flushRec struct {
		cookie libnbd.Cookie
		acked  []int
	}
	done := make(chan []int, 1)
	var ackedCount atomic.Int64
	go func() {
		var acked, durableSlots []int
		pending := map[libnbd.Cookie]int{}
		var flushes []flushRec
		next := 0
		defer func() { done <- durableSlots }()
		for {
			for len(pending) < 32 && next < nslots {
				w := slotWrite(next)
				c, err := h2.AioPwrite(w.data, uint64(w.off), 0)
				if err != nil {
					return
				}
				pending[c] = next
				next++
				if next%50 == 0 {
					fc, err := h2.AioFlush(0)
					if err != nil {
						return
					}
					flushes = append(flushes, flushRec{fc, append([]int(nil), acked...)})
					pending[fc] = -1
				}
			}
			if len(pending) == 0 {
				return
			}
			c, err := h2.AioWaitAny()
			if err != nil {
				return
			}
			slot := pending[c]
			delete(pending, c)
			if slot >= 0 {
				acked = append(acked, slot)
				ackedCount.Add(1)
				continue
			}
			for i, f := range flushes {
				if f.cookie == c {
					durableSlots = append(durableSlots, f.acked...)
					flushes = append(flushes[:i], flushes[i+1:]...)
					break
				}
			}
		}
	}()
	// Kill once a random number of slot writes has been answered, so that the kill always
	// lands in the middle of the stream.
	killAt := int64(50 + rng.IntN(nslots-200))
	for deadline := time.Now().Add(time.Minute); ackedCount.Load() < killAt; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d slot writes answered after a minute", ackedCount.Load(), killAt)
		}
	}
	s.Kill()
	var durableSlots []int
	select {
	case durableSlots = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("slot writer still running 30s after the server was killed")
	}
	h.Close()
	h2.Close()
	isDurable := map[int]bool{}
	for _, i := range durableSlots {
		isDurable[i] = true
	}

	if format == "qcow2" {
		checkAfterCrash(t, img)
		if lazy && !dirtyFlag(t, img) {
			t.Errorf("lazy-refcounts image killed during allocating writes has no dirty bit")
		}
	}
	s2 := startQnbd(t, serverConfig{Args: []string{"-f", format, img}})
	h3 := connect(t, s2, "", nil)
	for _, w := range durable {
		got := make([]byte, len(w.data))
		must(t, h3.Pread(got, uint64(w.off), 0))
		requireBytes(t, "acknowledged and flushed (or FUA) write", w.off, got, w.data)
	}
	torn := 0
	for i := range nslots {
		w := slotWrite(i)
		got := make([]byte, len(w.data))
		must(t, h3.Pread(got, uint64(w.off), 0))
		if isDurable[i] {
			requireBytes(t, fmt.Sprintf("flushed slot %d", i), w.off, got, w.data)
			continue
		}
		// Not known durable: each 512-byte sector is either never written (zeros) or this
		// write's data, never anything else.
		for o := 0; o < len(got); o += 512 {
			g, n := got[o:o+512], w.data[o:o+512]
			if firstDiff(g, n) >= 0 && firstDiff(g, make([]byte, 512)) >= 0 {
				t.Errorf("slot %d sector at %d reads neither zeros nor its write", i, w.off+int64(o))
				break
			}
		}
		if firstDiff(got, w.data) >= 0 && firstDiff(got, make([]byte, len(got))) >= 0 {
			torn++
		}
	}
	t.Logf("killed after %d slot writes were answered: %d flushed or FUA writes and %d flushed slots read back, %d slots partly written",
		killAt, len(durable), len(isDurable), torn)
	// One more write after the restart, then a clean stop.
	must(t, h3.Pwrite(stamp(9, 0, 4096), 0, libnbd.CmdFlagFUA))
	h3.Close()
	s2.Stop()
	if format == "qcow2" {
		// The restart repaired a dirty image; a clean stop leaves at most the leaks of the
		// crash, which qemu-img check -r leaks then fixes.
		if lazy {
			// A dirty image is repaired (refcounts rebuilt) on the read-write open.
			requireClean(t, img)
			if dirtyFlag(t, img) {
				t.Errorf("dirty bit still set after a repairing open and a clean stop")
			}
		}
		checkNoCorruption(t, img)
		repairLeaks(t, img)
	}
}

// checkAfterCrash requires qemu-img check exit 0 or 3 (leaks allowed), never 1 or 2 - except
// that an image whose dirty bit is set (lazy refcounts) may have stale refcounts by design
// and then shows them as corruptions (exit 2) until it is repaired on a read-write open.
func checkAfterCrash(t *testing.T, img string) {
	t.Helper()
	r := qemuCheck(t, img, "")
	if r.ExitCode == 0 || r.ExitCode == 3 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), toolTimeout)
	defer cancel()
	info, err := corpus.GetInfo(ctx, img, "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	if r.ExitCode == 2 && info.DirtyFlag && info.FormatSpecific.Data.LazyRefcounts {
		t.Logf("dirty lazy-refcounts image after kill -9: %d stale refcounts", r.Corruptions)
		return
	}
	t.Fatalf("qemu-img check after kill -9: exit %d (%d corruptions, %d check errors, dirty %v), want 0 or 3\n%s",
		r.ExitCode, r.Corruptions, r.CheckErrors, info.DirtyFlag, r.Stderr)
}

// dirtyFlag reads the image's dirty bit with qemu-img info.
func dirtyFlag(t *testing.T, img string) bool {
	t.Helper()
	info, err := corpus.GetInfo(t.Context(), img, "qcow2")
	if err != nil {
		t.Fatal(err)
	}
	return info.DirtyFlag
}

// checkNoCorruption requires qemu-img check exit 0 or 3.
func checkNoCorruption(t *testing.T, img string) {
	t.Helper()
	r := qemuCheck(t, img, "")
	if r.ExitCode != 0 && r.ExitCode != 3 {
		t.Errorf("qemu-img check after restart and clean stop: exit %d, want 0 or 3\n%s", r.ExitCode, r.Stderr)
	}
}

// repairLeaks runs qemu-img check -r leaks and requires the image to end up clean.
func repairLeaks(t *testing.T, img string) {
	t.Helper()
	r := qemuCheck(t, img, "leaks")
	if r.ExitCode != 0 {
		t.Errorf("qemu-img check -r leaks: exit %d\n%s", r.ExitCode, r.Stderr)
	}
}
