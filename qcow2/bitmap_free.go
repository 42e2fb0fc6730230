// Freeing the clusters a stored bitmap leaves behind, with QEMU's verdict on the ones that
// cannot be freed (docs/bitmaps.md, "Damaged bitmaps: open and check").
package qcow2

import (
	"fmt"
	"syscall"
)

// freeBitmapRun frees the n clusters from c that one of QEMU's qcow2_free_clusters calls of a
// bitmap store frees (the old directory, a data cluster, a table), with mu held. QEMU lowers
// the run's refcounts all or none: where one of them cannot be lowered it prints
// "qcow2_free_clusters failed: ERRNO" and frees nothing of the run. The runs of a damaged
// bitmap (a cluster named twice, a table past the end of the file) fail so:
//   - EINVAL: the refcount is 0 already;
//   - EAGAIN: no refcount block covers the cluster, but the reftable has room for one (QEMU
//     makes an empty one, then gives up the free; the engine makes none, and a later free in
//     the same range fails with EINVAL, as in QEMU);
//   - EFBIG: the cluster lies past what the reftable covers (QEMU fails to grow it).
//
// The message goes to bitmapFreeFailures; the image is not marked corrupt, as QEMU does not.
func (img *Image) freeBitmapRun(c hostCluster, n ClusterCount) {
	if errno := img.bitmapRunFreeable(c, n); errno != 0 {
		img.bitmapFreeFailures = append(img.bitmapFreeFailures,
			fmt.Sprintf("qcow2_free_clusters failed: %s", qemuStrerror(errno)))
		img.log.Warn("qcow2: cannot free bitmap clusters", "cluster", uint64(c), "clusters", uint64(n), "err", errno)
		return
	}
	img.alloc.free(c, n, false)
}

// bitmapRunFreeable is the errno QEMU's update_refcount fails a decrease of the run with, or
// 0; it notes the refcount blocks QEMU would have made on the way.
func (img *Image) bitmapRunFreeable(c hostCluster, n ClusterCount) syscall.Errno {
	a := img.alloc
	for k := ClusterCount(0); k < n; k++ {
		cl := c.Add(k)
		i := cl.refTableIndex(img.geo)
		if uint64(i) >= uint64(len(a.table)) {
			return syscall.EFBIG
		}
		if _, _, ok, err := a.refblockFor(i); err != nil {
			return syscall.EIO
		} else if !ok {
			if img.bitmapPhantomBlocks == nil {
				img.bitmapPhantomBlocks = map[refTableIndex]bool{}
			}
			if img.bitmapPhantomBlocks[i] {
				return syscall.EINVAL // QEMU's new block counts 0 for it
			}
			img.bitmapPhantomBlocks[i] = true
			return syscall.EAGAIN
		}
		rc, err := a.refcount(cl)
		if err != nil {
			return syscall.EIO
		}
		if rc == 0 {
			return syscall.EINVAL
		}
	}
	return 0
}
