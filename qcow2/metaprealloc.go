// QEMU's metadata-preallocation heuristic (qcow2_detect_metadata_preallocation), through the
// engine's own refcounts.
package qcow2

import "fmt"

// metadataPreallocated reports, deciding once per open image (at its first block status query,
// as QEMU does), whether the image looks preallocated with preallocation=metadata: more
// clusters have a non-zero refcount than the image file occupies on disk, by at least
// max(real*10/9, real+2) where real is the file's allocated bytes over the cluster size. Block
// status then looks under data clusters for holes of the host file (refineHostHoles).
// Counting stops at the threshold. Called with mu held; an error (a store that cannot tell its
// allocated size, a refcount that cannot be read) means no, as in QEMU.
func (img *Image) metadataPreallocated() (bool, error) {
	if img.preallocChecked {
		return img.prealloc, nil
	}
	img.preallocChecked = true
	as, ok := img.file.(allocatedSizer)
	if !ok {
		return false, nil
	}
	size, err := img.file.Size()
	if err != nil {
		return false, nil
	}
	real, err := as.AllocatedBytes()
	if err != nil || real < 0 {
		return false, nil
	}
	g := img.geo
	realClusters := uint64(real) / g.ClusterSize()
	threshold := max(realClusters*10/9, realClusters+2)
	end := uint64(g.clustersFor(alignUp(uint64(size), 512)))
	count, err := img.countUsedClusters(end, threshold)
	if err != nil {
		img.log.Debug("qcow2: metadata preallocation check failed", "err", err)
		return false, nil
	}
	img.prealloc = count >= threshold
	return img.prealloc, nil
}

// countUsedClusters counts the clusters below end with a non-zero refcount, stopping at limit.
// A writable image counts through its refcount cache (what is not flushed yet included); a
// read-only one reads the refcount structures, checking each reftable entry before use.
func (img *Image) countUsedClusters(end, limit uint64) (uint64, error) {
	g := img.geo
	per := g.refBlockEntries()
	var count uint64
	if img.alloc != nil {
		for c := uint64(0); c < end && count < limit; c++ {
			rc, err := img.alloc.refcount(hostCluster(c))
			if err != nil {
				return 0, err
			}
			if rc != 0 {
				count++
			}
		}
		return count, nil
	}
	table, err := loadRefTable(img.file, &img.hdr)
	if err != nil {
		return 0, err
	}
	block := make([]byte, g.ClusterSize())
	for i := uint64(0); i < uint64(len(table)) && i*per < end && count < limit; i++ {
		e := table[i]
		off := e.Offset()
		if off == 0 {
			continue
		}
		if e.reserved() != 0 || off.inCluster(g) != 0 || uint64(off)+g.ClusterSize() > img.fileEnd() {
			return 0, fmt.Errorf("reftable entry %d (%#x) is invalid", i, uint64(e))
		}
		if err := readAtFull(img.file, block, off); err != nil {
			return 0, err
		}
		rb := RefBlock{Data: block, Order: g.RefcountOrder}
		for j := uint64(0); j < per && i*per+j < end && count < limit; j++ {
			if rb.Get(refBlockIndex(j)) != 0 {
				count++
			}
		}
	}
	return count, nil
}
