// The safe half of qnbd-img rebase: every range the image does not allocate itself is read
// from the old and the new backing file, and what differs (in 512-byte sectors) is written
// into the image, so that its contents stay the same once the header names the new backing
// file. Ranges are cut as qemu-img cuts them (2 MiB, the image's own allocation runs, the
// ends of both backing files), which also paces the -p progress; several workers compare and
// write at once (docs/chains.md).
package main

import (
	"bytes"
	"sync"

	"github.com/qnbd/qnbd/internal/imgfmt"
)

// rebaseBufSize is qemu-img's IO_BUF_SIZE.
const rebaseBufSize = 2 << 20

// rebaseWorkers is how many ranges are compared and written at once.
const rebaseWorkers = 4

// rebaseRange is one range the image does not allocate; oldZero says it lies past the old
// backing file's end (it reads as zeros and differences are written as zeros).
type rebaseRange struct {
	off, n  uint64
	oldZero bool
	seq     int // position in the plan: writes go out in this order
}

// rebaseCopy writes into top what differs between its old backing chain and newBacking (nil:
// no backing file, reads as zeros). false after reporting an error.
func (a *app) rebaseCopy(top, newBacking imgfmt.Disk, p *progress) bool {
	size := top.Size()
	var oldSize, newSize uint64
	if layers := imgfmt.Chain(top); len(layers) > 1 {
		oldSize = layers[1].Size
	}
	if newBacking != nil {
		newSize = newBacking.Size()
	}
	ranges, err := rebasePlan(top, size, oldSize, newSize, newBacking != nil)
	if err != nil {
		a.errorf("error while reading image metadata: %s", strerror(err))
		return false
	}
	var step float32
	if size != 0 {
		step = float32(100) / float32(size/min(size, rebaseBufSize))
	}
	w := &rebaseWriter{a: a, top: top, newBacking: newBacking, newSize: newSize}
	w.turnCond = sync.NewCond(&w.turnMu)
	work := make(chan rebaseRange)
	var wg sync.WaitGroup
	for range rebaseWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			oldBuf, newBuf := make([]byte, rebaseBufSize), make([]byte, rebaseBufSize)
			for rr := range work {
				ob, nb := oldBuf[:rr.n], newBuf[:rr.n]
				ok := !w.failed() && w.read(rr, ob, nb)
				w.turn(rr)
				ok = ok && !w.failed() && w.write(rr, ob, nb)
				w.done(rr)
				if ok {
					p.print(step, 100)
				}
			}
		}()
	}
	for _, rr := range ranges {
		if w.failed() {
			break
		}
		work <- rr
	}
	close(work)
	wg.Wait()
	return !w.failed()
}

// rebasePlan lists the ranges to compare, cut as qemu-img's loop cuts them.
func rebasePlan(top imgfmt.Disk, size, oldSize, newSize uint64, haveNew bool) ([]rebaseRange, error) {
	var out []rebaseRange
	cur := newExtentCursor(top, size)
	for off := uint64(0); off < size; {
		n := min(rebaseBufSize, size-off)
		allocated, run, err := ownRun(cur, off, n, size)
		if err != nil {
			return nil, err
		}
		n = run
		if allocated {
			off += n
			continue
		}
		rr := rebaseRange{off: off, oldZero: off >= oldSize}
		if !rr.oldZero && off+n > oldSize {
			n = oldSize - off
		}
		if haveNew && off < newSize && off+n > newSize {
			n = newSize - off
		}
		rr.n, rr.seq = n, len(out)
		out = append(out, rr)
		off += n
	}
	return out, nil
}

// ownRun says whether the image itself allocates off (data or zeros in its own layer) and for
// how many bytes, at most n, that stays so.
func ownRun(cur *extentCursor, off, n, size uint64) (bool, uint64, error) {
	e, err := cur.at(off)
	if err != nil {
		return false, 0, err
	}
	own := e.Present() && e.Depth == 0
	end := min(e.End(), off+n)
	for end < off+n && end < size {
		e, err = cur.at(end)
		if err != nil {
			return false, 0, err
		}
		if (e.Present() && e.Depth == 0) != own {
			break
		}
		end = min(e.End(), off+n)
	}
	return own, end - off, nil
}

// rebaseWriter compares and writes ranges; the first error is reported and stops the rest.
type rebaseWriter struct {
	a          *app
	top        imgfmt.Disk
	newBacking imgfmt.Disk
	newSize    uint64

	mu  sync.Mutex
	err bool

	turnMu   sync.Mutex
	turnCond *sync.Cond
	next     int // seq of the range whose turn it is to write
}

// turn waits until rr may write: every range before it is done. Every dispatched range
// takes its turn, failed ones included, so none waits forever.
func (w *rebaseWriter) turn(rr rebaseRange) {
	w.turnMu.Lock()
	for w.next != rr.seq {
		w.turnCond.Wait()
	}
	w.turnMu.Unlock()
}

// done passes the turn on; every dispatched range calls it once, failed ones included.
func (w *rebaseWriter) done(rr rebaseRange) {
	w.turnMu.Lock()
	w.next = rr.seq + 1
	w.turnCond.Broadcast()
	w.turnMu.Unlock()
}

func (w *rebaseWriter) failed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *rebaseWriter) fail(format string, args ...any) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.err {
		w.err = true
		w.a.errorf(format, args...)
	}
	return false
}

// read fills the buffers with the range as the old chain and the new backing file have it;
// false after an error.
func (w *rebaseWriter) read(rr rebaseRange, oldBuf, newBuf []byte) bool {
	if rr.oldZero {
		clear(oldBuf)
	} else if _, err := w.top.ReadAt(oldBuf, int64(rr.off)); err != nil {
		return w.fail("error while reading from old backing file")
	}
	if w.newBacking == nil || rr.off >= w.newSize {
		clear(newBuf)
	} else if _, err := w.newBacking.ReadAt(newBuf, int64(rr.off)); err != nil {
		return w.fail("error while reading from new backing file")
	}
	return true
}

// write writes into the image, per 512-byte sector, where the buffers differ; false after an
// error.
func (w *rebaseWriter) write(rr rebaseRange, oldBuf, newBuf []byte) bool {
	for done := uint64(0); done < rr.n; {
		differ, run := compareSectors(oldBuf[done:], newBuf[done:])
		if differ {
			var err error
			if rr.oldZero {
				err = w.top.WriteZeroes(rr.off+done, run)
			} else {
				_, err = w.top.WriteAt(oldBuf[done:done+run], int64(rr.off+done))
			}
			if err != nil {
				return w.fail("Error while writing to COW image: %s", strerror(err))
			}
		}
		done += run
	}
	return true
}

// compareSectors is qemu-img's compare_buffers: whether the first 512-byte sector of a and b
// differs, and how many bytes from the start share that verdict.
func compareSectors(a, b []byte) (bool, uint64) {
	n := len(a)
	first := min(n, imgfmt.SectorSize)
	differ := !bytes.Equal(a[:first], b[:first])
	i := first
	for i < n {
		l := min(n-i, imgfmt.SectorSize)
		if !bytes.Equal(a[i:i+l], b[i:i+l]) != differ {
			break
		}
		i += l
	}
	return differ, uint64(i)
}
