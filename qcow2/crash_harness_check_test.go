// Crash and fault harness, checks: everything required of one state a crash or a failure
// left (qemu-img check as the oracle, our check agreeing, data per the model, a repairing
// read-write open, and writes after it that must not land on anything live).
package qcow2

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// cwCounters are totals reported at the end of a test.
type cwCounters struct {
	states, qemuChecks, ourChecks, dirty, leaky atomic.Int64
}

// cwStateOpts says what is allowed of a state and how hard to look at it.
type cwStateOpts struct {
	label   string
	qemu    bool // run qemu-img check (twice: on the state, and after our repair)
	leaksOK bool // leaks are tolerated (a crash, or a failure that persisted)
}

// qemuCheck runs qemu-img check, the oracle, on a file holding st, and counts the run.
func (env *cwEnv) qemuCheck(st *memstore.Store, cnt *cwCounters) (*corpus.CheckResult, error) {
	path, err := env.file(st)
	if err != nil {
		return nil, err
	}
	defer os.Remove(path)
	cnt.qemuChecks.Add(1)
	return corpus.Check(context.Background(), path, corpus.CheckOptions{})
}

// checkState runs every check on one state. It returns an error saying what failed; the
// caller keeps the state as an artefact.
func (env *cwEnv) checkState(st *memstore.Store, exp *cwExpect, o cwStateOpts, cnt *cwCounters) error {
	cnt.states.Add(1)
	hdr, err := ReadHeader(st)
	if err != nil {
		return fmt.Errorf("header: %v", err)
	}
	if hdr.Corrupt() {
		return errors.New("the corrupt bit is set")
	}
	if env.w.bitmaps != nil { // a workload may start without bitmaps and add some
		if err := env.checkBitmapState(st); err != nil {
			return err
		}
	}
	dirty := hdr.Dirty()
	if dirty && !hdr.LazyRefcounts() {
		return errors.New("dirty bit set on an image without lazy refcounts")
	}
	if dirty {
		cnt.dirty.Add(1)
	}
	allowed := []int{0}
	if o.leaksOK || dirty {
		allowed = append(allowed, 3)
	}
	if dirty {
		// Refcounts of a dirty image may be anything: qemu-img reports refcounts that are too
		// low as corruptions, and a read-write open repairs them (039).
		allowed = append(allowed, 2)
	}
	ours, err := CheckStorage(st, RepairNone)
	cnt.ourChecks.Add(1)
	if err != nil {
		return fmt.Errorf("our check did not complete: %v", err)
	}
	class := ours.ExitCode()
	if class == 3 {
		cnt.leaky.Add(1)
	}
	if env.w.snapOps && class == 2 && copiedOnly(ours) {
		allowed = append(allowed, 2)
	}
	if !slices.Contains(allowed, class) {
		return fmt.Errorf("our check: exit class %d (allowed %v): %d corruptions, %d leaks, %d check errors\n%s",
			class, allowed, ours.Corruptions, ours.Leaks, ours.CheckErrors, strings.Join(ours.Messages, "\n"))
	}
	if o.qemu {
		q, err := env.qemuCheck(st, cnt)
		if err != nil {
			return err
		}
		code, out := q.ExitCode, q.String()
		if !slices.Contains(allowed, code) {
			return fmt.Errorf("qemu-img check exit %d (allowed %v)\n%s", code, allowed, out)
		}
		if code != class || q.Leaks != int64(ours.Leaks) || q.Corruptions != int64(ours.Corruptions) || q.CheckErrors != int64(ours.CheckErrors) {
			return fmt.Errorf("our check (class %d: %d corruptions, %d leaks, %d check errors) disagrees with qemu-img (exit %d)\n%s\nours:\n%s",
				class, ours.Corruptions, ours.Leaks, ours.CheckErrors, code, out, strings.Join(ours.Messages, "\n"))
		}
	}

	// Read-only, as it is.
	got, err := env.readAll(st.Clone())
	defer env.putBuf(got)
	if err != nil {
		return fmt.Errorf("read-only open and read: %v", err)
	}
	if err := exp.verify(got); err != nil {
		return err
	}
	if env.snapInit != nil {
		if err := env.verifySnapshot(st.Clone()); err != nil {
			return err
		}
	}
	if err := env.verifySnapshots(st.Clone()); err != nil {
		return err
	}

	// Read-write: repairs a dirty image, reads the same, and accepts new writes that must
	// land on free clusters only.
	rw := st.Clone()
	img, err := env.open(rw, nil)
	if err != nil {
		return fmt.Errorf("read-write open: %v", err)
	}
	got2 := env.getBuf(img.Size())
	defer env.putBuf(got2)
	if _, err := img.ReadAt(got2, 0); err != nil {
		img.Close()
		return fmt.Errorf("read after read-write open: %v", err)
	}
	if !bytes.Equal(got, got2) {
		img.Close()
		return fmt.Errorf("read-write open reads differently from read-only: %s", engFirstDiff(got, got2))
	}
	want := postCrashWrites(img, got2, env.getBuf(img.Size()))
	defer env.putBuf(want)
	if err := img.Flush(); err != nil {
		img.Close()
		return fmt.Errorf("flush after writes on the reopened image: %v", err)
	}
	if err := img.Close(); err != nil {
		return fmt.Errorf("close after writes on the reopened image: %v", err)
	}
	if want == nil {
		return errors.New("writes on the reopened image failed")
	}
	rw.Reopen()
	// The open repaired a dirty image; leaks of a clean one stay (QEMU does not repair them on
	// open either) but no new ones appear; a leak repair then leaves a clean image.
	after, err := CheckStorage(rw, RepairNone)
	cnt.ourChecks.Add(1)
	maxLeaks := ours.Leaks
	if dirty {
		maxLeaks = 0
	} else if after != nil && after.Leaks > maxLeaks {
		// Clusters past the end of the crashed file are not checked, but may have refcounts
		// (counted before their data was written): they show up once the file grows.
		maxLeaks = latentLeaks(st)
	}
	copiedLeft := env.w.snapOps && after != nil && after.Corruptions > 0 && copiedOnly(after)
	if err != nil || (after.Corruptions != 0 && !copiedLeft) || after.CheckErrors != 0 || after.Leaks > maxLeaks {
		msgs := ""
		if after != nil {
			msgs = fmt.Sprintf("%d corruptions, %d leaks (before: %d), %d check errors\n%s", after.Corruptions, after.Leaks, ours.Leaks, after.CheckErrors, strings.Join(after.Messages, "\n"))
		}
		return fmt.Errorf("after our read-write open, writes and close, our check: %v %s", err, msgs)
	}
	if after.Leaks > 0 || copiedLeft {
		// A leak repair also sets the COPIED flags right, once the refcounts are (as QEMU's).
		rep, err := CheckStorage(rw, RepairLeaks)
		if err == nil && copiedLeft {
			rep, err = CheckStorage(rw, RepairNone)
			if rep != nil {
				rep.LeaksFixed = after.Leaks
			}
		}
		if err != nil || rep.Corruptions != 0 || rep.Leaks != 0 || rep.CheckErrors != 0 || rep.LeaksFixed != after.Leaks {
			return fmt.Errorf("leak repair after our read-write open: %v %+v", err, rep)
		}
	}
	if o.qemu {
		q, err := env.qemuCheck(rw, cnt)
		if err != nil {
			return err
		}
		code, out := q.ExitCode, q.String()
		if code != 0 {
			return fmt.Errorf("after our read-write open, writes, close (and leak repair): qemu-img check exit %d\n%s", code, out)
		}
	}
	got3, err := env.readAll(rw.Clone())
	defer env.putBuf(got3)
	if err != nil {
		return fmt.Errorf("read after reopen: %v", err)
	}
	if !bytes.Equal(got3, want) {
		return fmt.Errorf("after writes on the reopened image, the disk is not what was written: %s", engFirstDiff(want, got3))
	}
	return nil
}

// latentLeaks counts the leaks of a state as if its file were longer: clusters past its end
// whose refcounts reached the disk before their data did.
func latentLeaks(st *memstore.Store) int {
	ext := st.Clone()
	size, _ := ext.Size()
	if err := ext.Truncate(size + 32*mib); err != nil {
		return -1
	}
	res, err := CheckStorage(ext, RepairNone)
	if err != nil {
		return -1
	}
	return res.Leaks
}

// postCrashWrites writes new stamps at the start, across a cluster boundary in the middle,
// and near the end of the disk (allocating, copying, or in place), and returns the disk as it
// must now read, in want (of len(cur)); nil if a write failed.
func postCrashWrites(img *Image, cur, want []byte) []byte {
	size := img.Size()
	cs := img.geo.ClusterSize()
	copy(want, cur)
	ranges := [][2]uint64{{0, 4 * kib}, {size/2 - 1024, cs + 2048}, {size - 8*kib, 4 * kib}}
	for i, r := range ranges {
		off, n := r[0], min(r[1], size-r[0])
		buf := make([]byte, n)
		stampRange(buf, off, 0xf0000000+uint32(i))
		if _, err := img.WriteAt(buf, int64(off)); err != nil {
			return nil
		}
		copy(want[off:], buf)
	}
	return want
}

// readAll opens a state read-only and reads the whole disk into a buffer from getBuf.
func (env *cwEnv) readAll(s *memstore.Store) ([]byte, error) {
	img, err := env.open(s, nil, func(o *OpenOptions) { o.ReadOnly = true })
	if err != nil {
		return nil, err
	}
	defer img.Close()
	b := env.getBuf(img.Size())
	if _, err := img.ReadAt(b, 0); err != nil {
		return nil, err
	}
	return b, nil
}

// verifySnapshot requires the internal snapshot to read exactly as it was taken.
func (env *cwEnv) verifySnapshot(s *memstore.Store) error {
	img, err := env.open(s, nil, func(o *OpenOptions) { o.ReadOnly, o.Snapshot = true, "s1" })
	if err != nil {
		return fmt.Errorf("open snapshot s1: %v", err)
	}
	defer img.Close()
	b := env.getBuf(img.Size())
	defer env.putBuf(b)
	if _, err := img.ReadAt(b, 0); err != nil {
		return fmt.Errorf("read snapshot s1: %v", err)
	}
	for sec := 0; sec < len(b)/sectorSize; sec++ {
		idx, g, ok := readStamp(b[sec*sectorSize:])
		if !ok || (g != 0 && idx != uint64(sec)) || g != env.snapInit[sec] {
			return fmt.Errorf("snapshot s1 changed: sector %d holds (%d, gen %d, valid %v), expected gen %d", sec, idx, g, ok, env.snapInit[sec])
		}
	}
	return nil
}

// keepState saves a failing state (and the backing file it names) and returns where.
func (env *cwEnv) keepState(t testing.TB, st *memstore.Store, name string) string {
	dir := *crashKeep
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Sprintf("(not kept: %v)", err)
	}
	if env.bbase != nil {
		if err := env.bbase.WriteFile(filepath.Join(dir, "backing.qcow2")); err != nil {
			return fmt.Sprintf("(not kept: %v)", err)
		}
	}
	name = strings.NewReplacer("/", "_", " ", "_", "<", "_", "(", "_", ")", "_", "*", "_").Replace(name)
	p := filepath.Join(dir, name+".qcow2")
	if err := st.WriteFile(p); err != nil {
		return fmt.Sprintf("(not kept: %v)", err)
	}
	return p
}

// durablePrefix is the length of the log prefix that is durable when a crash happens at
// barrier i: up to and including the last Sync before i (syncs are SyncPoints).
func durablePrefix(syncs []int, i int) int {
	d := 0
	for _, p := range syncs {
		if p <= i {
			d = p
		}
	}
	return d
}

// subsetStates yields, for every barrier whose window (the writes since the previous sync) holds
// at most maxK mutations, every non-empty subset of the window applied over the durable prefix
// (whole writes, in log order): exhaustive where CrashStates samples. For larger windows at or
// after log index oneFrom it yields each window with one write left out, and with one write
// only (CrashMonkey's single reordering): 2k states that put every write ahead of, or behind,
// all the others. The point's Variant numbers the state within its barrier.
func subsetStates(st *memstore.Store, maxK, oneFrom int) iter.Seq2[memstore.CrashPoint, *memstore.Store] {
	return func(yield func(memstore.CrashPoint, *memstore.Store) bool) {
		log := st.Log()
		// The durable prefix is kept up to date window by window (clones share its pages),
		// rather than replayed from the start of the log for every window.
		durable, err := st.CrashAt(0, nil, memstore.CrashConfig{Policy: memstore.DropUnsynced})
		if err != nil {
			return
		}
		start := 0
		for i := 0; i <= len(log); i++ {
			if i < len(log) && log[i].Kind != memstore.OpSync {
				continue
			}
			window := log[start:i]
			var masks []func(j int) bool
			switch k := len(window); {
			case k == 0:
			case k <= maxK:
				for mask := 1; mask < 1<<k; mask++ {
					masks = append(masks, func(j int) bool { return mask&(1<<j) != 0 })
				}
			case oneFrom >= 0 && i >= oneFrom:
				for x := range k {
					masks = append(masks, func(j int) bool { return j != x }, func(j int) bool { return j == x })
				}
			}
			for v, keep := range masks {
				s := durable.Clone()
				for j, op := range window {
					if keep(j) {
						applyOp(s, op)
					}
				}
				if !yield(memstore.CrashPoint{Barrier: i, Variant: v + 1}, s.Clone()) {
					return
				}
			}
			for _, op := range window {
				applyOp(durable, op)
			}
			durable = durable.Clone() // drop the pending record of what was just applied
			start = i + 1
		}
	}
}

// applyOp performs a logged mutation on s.
func applyOp(s *memstore.Store, op memstore.Op) {
	switch op.Kind {
	case memstore.OpWrite:
		s.WriteAt(op.Data, op.Off)
	case memstore.OpTruncate:
		s.Truncate(op.Off)
	case memstore.OpPunchHole:
		s.PunchHole(op.Off, op.Len)
	}
}

// getBuf returns a buffer of n bytes (contents undefined) for a whole-disk read, reusing one
// that putBuf returned: under -race every fresh multi-MiB buffer costs page faults on the race
// detector's shadow memory, which made up most of the crash enumeration's time.
func (env *cwEnv) getBuf(n uint64) []byte {
	env.mu.Lock()
	defer env.mu.Unlock()
	for i, b := range env.bufs {
		if uint64(cap(b)) >= n {
			env.bufs = slices.Delete(env.bufs, i, i+1)
			return b[:n]
		}
	}
	return make([]byte, n)
}

// putBuf gives back a buffer from getBuf (nil is ignored).
func (env *cwEnv) putBuf(b []byte) {
	if b == nil {
		return
	}
	env.mu.Lock()
	defer env.mu.Unlock()
	env.bufs = append(env.bufs, b)
}
