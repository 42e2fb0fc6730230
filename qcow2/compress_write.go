// Compressed writes (QEMU's qcow2_co_pwritev_compressed): a cluster compressed by the caller
// (CompressCluster, safe to run on many goroutines at once) is packed byte by byte after the
// previous compressed cluster, in the same host cluster or across into the next one when that
// is the next one allocated, and its L2 entry becomes a compressed descriptor.
package qcow2

import (
	"fmt"
	"syscall"
)

// ErrIncompressible is returned by CompressCluster when the cluster does not shrink: QEMU
// then writes it uncompressed (WriteAt), and so should the caller.
var ErrIncompressible = errIncompressible

// CompressCluster compresses one guest cluster (a shorter last cluster of the disk is padded
// with zeros, as QEMU pads it) with the image's compression type: a raw deflate stream with a
// 4 KiB window (zlib) or one zstd frame. It fails with ErrIncompressible unless the result is
// smaller than a cluster by at least one byte (QEMU compresses into cluster_size - 1 bytes).
// It touches no image state and may run concurrently with anything.
func (img *Image) CompressCluster(src []byte) ([]byte, error) {
	cs := img.geo.ClusterSize()
	if uint64(len(src)) > cs {
		return nil, fmt.Errorf("qcow2: %d bytes to compress, more than a %d-byte cluster: %w", len(src), cs, syscall.EINVAL)
	}
	if uint64(len(src)) < cs {
		full := make([]byte, cs)
		copy(full, src)
		src = full
	}
	out, err := compress(img.ctype, src)
	if err != nil {
		return nil, err
	}
	if uint64(len(out)) > cs-1 {
		return nil, errIncompressible
	}
	return out, nil
}

// WriteCompressedAt stores data, a cluster compressed by CompressCluster, as guest cluster at
// off (cluster aligned, inside the disk). As in QEMU the cluster must not hold data already
// (EIO): compressed writes fill new images. The data goes to the next free byte of the current
// compressed host cluster, or of a newly allocated one (the data may run on into it when it
// directly follows); every host cluster the data touches counts the entry once. The data is
// written before the L2 entry can reach the disk (the table waits for a data sync), and the
// refcounts before the L2 table (the L2 cache depends on the refcount cache from then on).
func (img *Image) WriteCompressedAt(off uint64, data []byte) error {
	img.gate.RLock()
	defer img.gate.RUnlock()
	g := img.geo
	cs := g.ClusterSize()
	if off%cs != 0 || len(data) == 0 || uint64(len(data)) >= cs {
		return fmt.Errorf("qcow2: compressed write of %d bytes at %d: %w", len(data), off, syscall.EINVAL)
	}
	if err := img.checkRequest(off, min(cs, img.size.Load()-min(off, img.size.Load())), true); err != nil {
		return err
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if err := img.prepareWrite(); err != nil {
		return err
	}
	if img.data != img.file {
		return fmt.Errorf("%w: compressed writes with an external data file (%w)", ErrUnsupported, syscall.ENOTSUP)
	}
	gc := GuestOffset(off).cluster(g)
	if _, busy := img.busy[gc]; busy {
		return fmt.Errorf("qcow2: compressed write into cluster %d while another write is in flight: %w", gc, syscall.EBUSY)
	}
	j := gc.l2Index(g)
	l2c, t, err := img.l2ForWrite(gc.l1Index(g), j, j+1)
	if err != nil {
		return img.fail(err)
	}
	if err := t.check(j); err != nil {
		return img.fail(img.markCorrupt(err))
	}
	old := t.get(j)
	if _, has := img.hostOf(old.e); has || old.e.Compressed() {
		return fmt.Errorf("qcow2: compressed write into allocated cluster %d: %w", gc, syscall.EIO)
	}
	host, err := img.allocBytes(uint64(len(data)))
	if err != nil {
		return img.fail(err)
	}
	if err := img.checkDataWrite(host, uint64(len(data))); err != nil {
		return err
	}
	if _, err := img.file.WriteAt(data, int64(host)); err != nil {
		return fmt.Errorf("qcow2: write compressed cluster at %#x: %w", uint64(host), err)
	}
	img.publishData(t)
	t.set(j, slot{e: makeCompressedL2Entry(g, host, uint64(len(data)))})
	img.l2.markDirty(l2c)
	if img.opts.WriteThrough {
		return img.flushLocked()
	}
	return nil
}

// allocBytes returns where n bytes (at most a cluster) of compressed data go, and counts the
// reference in every host cluster they touch (QEMU's qcow2_alloc_bytes). img.cbyte is the
// next free byte of the current compressed cluster (0: none).
func (img *Image) allocBytes(n uint64) (HostOffset, error) {
	g := img.geo
	a := img.alloc
	cur := img.cbyte
	if cur != 0 && cur.inCluster(g) != 0 {
		rc, err := a.refcount(cur.cluster(g))
		if err != nil {
			return 0, err
		}
		if rc == 0 || rc >= a.g.maxRefcount() {
			cur = 0 // freed meanwhile, or counted full: start a new cluster
		}
	} else {
		cur = 0
	}
	if cur != 0 && cur.inCluster(g)+n <= g.ClusterSize() {
		if err := img.countCompressed(cur.cluster(g)); err != nil {
			return 0, err
		}
		img.cbyte = cur.Add(n)
		return cur, nil
	}
	c, err := a.allocMeta(1, AllocData)
	if err != nil {
		return 0, err
	}
	if cur != 0 && c == cur.cluster(g)+1 {
		// Runs on into the cluster just allocated (which counts this entry already).
		if err := img.countCompressed(cur.cluster(g)); err != nil {
			return 0, err
		}
		img.cbyte = cur.Add(n)
		return cur, nil
	}
	img.cbyte = c.Offset(g).Add(n)
	return c.Offset(g), nil
}

// countCompressed adds one reference to host cluster c, which holds compressed data already.
// The L2 table that will point at it must not reach the disk before this count does: the L2
// cache depends on the refcount cache from now on (QEMU's qcow2_cache_set_dependency).
func (img *Image) countCompressed(c hostCluster) error {
	a := img.alloc
	rc, err := a.refcount(c)
	if err != nil {
		return err
	}
	if err := a.setRefcount(c, rc+1); err != nil {
		return err
	}
	if img.accurateRefcounts() {
		img.l2.depends = a.cache
	}
	return nil
}

// compressedCursorFreed forgets the compressed cursor when its cluster is freed (called by
// the allocator when a refcount reaches zero), so that no compressed data is ever appended to
// a cluster that was given to something else.
func (img *Image) compressedCursorFreed(c hostCluster) {
	if img.cbyte != 0 && img.cbyte.inCluster(img.geo) != 0 && img.cbyte.cluster(img.geo) == c {
		img.cbyte = 0
	}
}
