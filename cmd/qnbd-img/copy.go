// The copy behind qnbd-img convert: block status of the sources drives a pool of workers that
// read, skip zeros and write the target in 2 MiB pieces. Reads and zero detection run in
// parallel; writes to a qcow2 target go out in guest order (as qemu-img writes by default, so
// that clusters are allocated in the same order and the image is laid out alike) unless -W
// allows any order.
package main

import (
	"context"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/qnbd/qnbd/internal/imgfmt"
)

// copyBufSize is the largest piece one worker handles (qemu-img's default buffer, 2 MiB).
const copyBufSize = 2 << 20

// copier copies the concatenation of srcs into dst.
type copier struct {
	a         *app
	srcs      []imgfmt.Disk
	dst       imgfmt.Disk
	total     uint64
	minSparse uint64 // zero runs at least this long are not written; 0 writes everything
	// cluster is the target's allocation unit (0 for raw): a zero run is left out only in
	// whole clusters, the zeros of a cluster that also gets data are written with it, as
	// qemu-img's writes end up doing, so the target is laid out alike.
	cluster  uint64
	workers  int
	zeroInit bool // dst reads as zeros already (new image, or --target-is-zero)
	inOrder  bool // write pieces in the order they were dispatched
	p        *progress

	orderMu   sync.Mutex
	orderCond *sync.Cond
	nextWrite uint64 // sequence number of the piece whose turn it is to write

	errOnce sync.Once
	err     error
	failed  atomic.Bool
}

// piece is one unit of work: n bytes at guest offset off of the target, taken from srcOff
// of source src; zero pieces are known to read as zeros in the source.
type piece struct {
	off, n, srcOff uint64
	src            int
	zero           bool
	seq            uint64
}

func (c *copier) fail(err error, format string, args ...any) {
	c.errOnce.Do(func() {
		c.err = err
		c.failed.Store(true)
		c.a.errorf(format, args...)
	})
}

func (c *copier) run() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.orderCond = sync.NewCond(&c.orderMu)
	pieces := make(chan piece, c.workers*2)
	var wg sync.WaitGroup
	for range c.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, copyBufSize)
			for p := range pieces {
				ok := c.copyPiece(p, buf)
				c.done(p)
				if !ok {
					cancel()
				}
				c.p.print(float32(p.n)/float32(max(c.total, 1))*100, 100)
			}
		}()
	}
	c.dispatch(ctx, pieces)
	close(pieces)
	wg.Wait()
	return c.err
}

// dispatch walks the sources' block status and cuts it into pieces that never cross a
// copyBufSize boundary of the target.
func (c *copier) dispatch(ctx context.Context, out chan<- piece) {
	base, seq := uint64(0), uint64(0)
	for i, src := range c.srcs {
		size := src.Size()
		cur := newExtentCursor(src, size)
		for off := uint64(0); off < size; {
			e, err := cur.at(off)
			if err != nil {
				c.fail(err, "error while reading block status at offset %d: %s", base+off, strerror(err))
				return
			}
			end := min(e.End(), size)
			for off < end {
				boundary := (base+off)/copyBufSize*copyBufSize + copyBufSize
				n := min(end-off, boundary-(base+off))
				select {
				case out <- piece{off: base + off, n: n, srcOff: off, src: i, zero: e.Zero(), seq: seq}:
					seq++
				case <-ctx.Done():
					return
				}
				off += n
			}
		}
		base += size
	}
}

// turn waits until piece p may write (in-order mode).
func (c *copier) turn(p piece) {
	if !c.inOrder {
		return
	}
	c.orderMu.Lock()
	for c.nextWrite != p.seq {
		c.orderCond.Wait()
	}
	c.orderMu.Unlock()
}

// done passes the turn to the next piece (in-order mode). Every dispatched piece calls it
// exactly once, failed ones included, so no worker waits forever.
func (c *copier) done(p piece) {
	if !c.inOrder {
		return
	}
	c.orderMu.Lock()
	c.nextWrite = p.seq + 1
	c.orderCond.Broadcast()
	c.orderMu.Unlock()
}

// copyPiece copies one piece; false after reporting an error.
func (c *copier) copyPiece(p piece, buf []byte) bool {
	if c.failed.Load() {
		return false
	}
	if p.zero {
		c.turn(p)
	}
	if p.zero {
		switch {
		case c.minSparse == 0:
			clear(buf[:p.n])
			return c.write(buf[:p.n], p.off)
		case c.zeroInit:
			return true
		default:
			return c.writeZeroes(p.off, p.n)
		}
	}
	b := buf[:p.n]
	_, err := c.srcs[p.src].ReadAt(b, int64(p.srcOff))
	c.turn(p)
	if err != nil {
		c.fail(err, "error while reading at byte %d: %s", p.off, strerror(err))
		return false
	}
	if c.minSparse == 0 {
		return c.write(b, p.off)
	}
	// Write the data, leaving out zero runs of at least minSparse bytes (made of aligned
	// blocks of the largest power of two not above minSparse); shorter zero runs are written
	// with the data around them.
	gran := max(uint64(1)<<(63-bits.LeadingZeros64(c.minSparse)), c.cluster)
	runStart, zeroStart := uint64(0), uint64(0)
	inZero := false
	flushData := func(end uint64) bool {
		if end > runStart {
			return c.write(b[runStart:end], p.off+runStart)
		}
		return true
	}
	for i := uint64(0); i < p.n; {
		next := min((p.off+i)/gran*gran+gran-p.off, p.n)
		z := isZero(b[i:next])
		switch {
		case z && !inZero:
			inZero, zeroStart = true, i
		case !z && inZero:
			inZero = false
			if i-zeroStart >= c.minSparse {
				if !flushData(zeroStart) || !c.zeroRun(p.off+zeroStart, i-zeroStart) {
					return false
				}
				runStart = i
			}
		}
		i = next
	}
	if inZero && p.n-zeroStart >= c.minSparse {
		return flushData(zeroStart) && c.zeroRun(p.off+zeroStart, p.n-zeroStart)
	}
	return flushData(p.n)
}

// zeroRun handles a zero run found in source data: nothing on a zero-initialised target.
func (c *copier) zeroRun(off, n uint64) bool {
	if c.zeroInit {
		return true
	}
	return c.writeZeroes(off, n)
}

func (c *copier) write(b []byte, off uint64) bool {
	if _, err := c.dst.WriteAt(b, int64(off)); err != nil {
		c.fail(err, "error while writing at byte %d: %s", off, strerror(err))
		return false
	}
	return true
}

func (c *copier) writeZeroes(off, n uint64) bool {
	if err := c.dst.WriteZeroes(off, n); err != nil {
		c.fail(err, "error while writing at byte %d: %s", off, strerror(err))
		return false
	}
	return true
}
