// The copy behind qnbd-img commit: every range the top or a layer above the base allocates is
// written into the base (data as data, zeros as zeros), by a few workers over the engine's
// concurrent write path, as QEMU's active commit job copies it (docs/chains.md).
package main

import (
	"errors"
	"sync"

	"github.com/qnbd/qnbd/internal/imgfmt"
)

// commitWorkers is how many pieces are read and written at once.
const commitWorkers = 4

// commitJob holds the images of one commit.
type commitJob struct {
	top   imgfmt.Disk // the top with its chain, read-only: what the guest sees
	topRW imgfmt.Disk // the top alone, read-write: its locks, and emptied at the end
	base  imgfmt.Disk // the base, read-write
	depth int         // the base's depth below the top
	p     *progress
}

// commitPiece is one range to copy: data read from the top's view, or zeros.
type commitPiece struct {
	off, n uint64
	zero   bool
}

// run copies every range allocated above the base into it, growing the base first when the
// top is larger (QEMU's commit does the same).
func (j *commitJob) run() error {
	size := j.top.Size()
	if j.base.Size() < size {
		if err := j.base.Resize(size, imgfmt.PreallocOff); err != nil {
			return err
		}
	}
	pieces, total, err := j.plan(size)
	if err != nil {
		return err
	}
	work := make(chan commitPiece)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	stop := make(chan struct{})
	for range commitWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, copyBufSize)
			for pc := range work {
				if err := j.copyPiece(pc, buf); err != nil {
					once.Do(func() { firstErr = err; close(stop) })
					continue
				}
				j.p.print(float32(pc.n)/float32(total)*100, 100)
			}
		}()
	}
dispatch:
	for _, pc := range pieces {
		select {
		case work <- pc:
		case <-stop:
			break dispatch
		}
	}
	close(work)
	wg.Wait()
	return firstErr
}

// plan lists the ranges to copy, cut at copyBufSize boundaries, and their total length.
func (j *commitJob) plan(size uint64) ([]commitPiece, uint64, error) {
	var out []commitPiece
	var total uint64
	cur := newExtentCursor(j.top, size)
	for off := uint64(0); off < size; {
		e, err := cur.at(off)
		if err != nil {
			return nil, 0, err
		}
		end := min(e.End(), size)
		if e.Present() && e.Depth < j.depth {
			for o := off; o < end; {
				n := min(end-o, (o/copyBufSize+1)*copyBufSize-o)
				out = append(out, commitPiece{off: o, n: n, zero: e.Kind == imgfmt.KindZero})
				total += n
				o += n
			}
		}
		off = end
	}
	return out, total, nil
}

func (j *commitJob) copyPiece(pc commitPiece, buf []byte) error {
	if pc.zero {
		return j.base.WriteZeroes(pc.off, pc.n)
	}
	b := buf[:pc.n]
	if _, err := j.top.ReadAt(b, int64(pc.off)); err != nil {
		return err
	}
	_, err := j.base.WriteAt(b, int64(pc.off))
	return err
}

// close closes the reading view and the base (flushing it).
func (j *commitJob) close() error {
	var err error
	if j.top != nil {
		j.top.Close()
		j.top = nil
	}
	if j.base != nil {
		err = j.base.Close()
		j.base = nil
	}
	return err
}

// empty deallocates everything in the top, so that it reads as the base it was committed to.
// Formats that cannot be emptied are left as they are (QEMU ignores ENOTSUP there).
func (j *commitJob) empty() error {
	err := imgfmt.MakeEmpty(j.topRW)
	if err != nil && !errors.Is(err, imgfmt.ErrNotSupported) {
		return &emptyError{err}
	}
	return nil
}

// release closes whatever is still open.
func (j *commitJob) release() {
	j.close()
	if j.topRW != nil {
		j.topRW.Close()
		j.topRW = nil
	}
}
