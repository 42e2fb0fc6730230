// convert -c: the target's clusters compressed on every core, written in guest order, as
// qemu-img convert -c writes them (one compressed cluster after the other), so that the
// output is laid out deterministically whatever the scheduling.
package main

import (
	"runtime"
	"sync"

	"github.com/qnbd/qnbd/internal/imgfmt"
)

// compressChunk is how much of the disk one worker takes at a time (a multiple of every
// cluster size up to 2 MiB).
const compressChunk = 2 << 20

// compressed is one target cluster ready to write: compressed bytes, or the raw cluster when
// it does not shrink; skip for a zero cluster on a zero-initialised target.
type compressed struct {
	data []byte
	raw  bool
	skip bool
}

// convertCompressed copies the concatenation of srcs into dst, compressing every cluster.
func (a *app) convertCompressed(r convertRequest, srcs []imgfmt.Disk, dst imgfmt.Disk, total uint64, p *progress, then func() error) int {
	cw, ok := imgfmt.AsCompressedWriter(dst)
	if !ok {
		dst.Close()
		a.errorf("Compression not supported for this file format")
		p.end()
		return 1
	}
	c := &copier{a: a, srcs: srcs, dst: dst, total: total, p: p, inOrder: true,
		zeroInit: !r.skipCreate || r.targetIsZero}
	c.orderCond = sync.NewCond(&c.orderMu)
	cs := cw.ClusterSize()
	workers := max(runtime.GOMAXPROCS(0), 2) * 2
	jobs := make(chan piece, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, compressChunk)
			out := make([]compressed, compressChunk/cs)
			for pc := range jobs {
				c.compressPiece(cw, pc, buf, out[:(pc.n+cs-1)/cs], r.minSparse > 0)
				c.done(pc)
				c.p.print(float32(pc.n)/float32(max(c.total, 1))*100, 100)
			}
		}()
	}
	seq := uint64(0)
	for off := uint64(0); off < total && !c.failed.Load(); off += compressChunk {
		jobs <- piece{off: off, n: min(compressChunk, total-off), seq: seq}
		seq++
	}
	close(jobs)
	wg.Wait()
	err := c.err
	return a.finishConvert(dst, p, err, then)
}

// readConcat fills b with the concatenated sources' bytes from off.
func (c *copier) readConcat(b []byte, off uint64) error {
	base := uint64(0)
	for _, s := range c.srcs {
		size := s.Size()
		if off < base+size && len(b) > 0 {
			n := min(uint64(len(b)), base+size-off)
			if _, err := s.ReadAt(b[:n], int64(off-base)); err != nil {
				return err
			}
			b, off = b[n:], off+n
		}
		base += size
	}
	clear(b)
	return nil
}

// compressPiece reads one chunk, compresses its clusters (in parallel with the other
// workers), then, in its turn, writes them.
func (c *copier) compressPiece(cw imgfmt.CompressedWriter, pc piece, buf []byte, out []compressed, sparse bool) {
	if c.failed.Load() {
		return
	}
	cs := cw.ClusterSize()
	b := buf[:pc.n]
	if err := c.readConcat(b, pc.off); err != nil {
		c.fail(err, "error while reading at byte %d: %s", pc.off, strerror(err))
		return
	}
	for i := range out {
		cl := b[uint64(i)*cs : min(uint64(i+1)*cs, pc.n)]
		out[i] = compressed{}
		if isZero(cl) && (c.zeroInit && sparse) {
			out[i].skip = true
			continue
		}
		z, err := cw.CompressCluster(cl)
		switch {
		case err == nil:
			out[i].data = z
		case imgfmt.IsIncompressible(err):
			out[i].data, out[i].raw = cl, true
		default:
			c.fail(err, "error while compressing at byte %d: %s", pc.off+uint64(i)*cs, strerror(err))
			return
		}
	}
	c.turn(pc)
	for i, o := range out {
		off := pc.off + uint64(i)*cs
		switch {
		case o.skip:
		case o.raw:
			if !c.write(o.data, off) {
				return
			}
		default:
			if err := cw.WriteCompressed(off, o.data); err != nil {
				c.fail(err, "error while writing at byte %d: %s", off, strerror(err))
				return
			}
		}
		if c.failed.Load() {
			return
		}
	}
}
