// QEMU's detection of metadata preallocation (qcow2_detect_metadata_preallocation).
package imgfmt

import (
	"encoding/binary"
	"os"

	"github.com/qnbd/qnbd/qcow2"
)

// detectMetadataPrealloc reports whether the image at path references clearly more clusters
// than its file has allocated on disk: at least max(real*10/9, real+2) clusters with a
// non-zero refcount, where real is the file's allocated bytes over the cluster size. QEMU
// then checks data clusters against the host file for holes when answering block status,
// which is how a metadata-preallocated image maps as "zero": true, "data": true. Only the
// refcount structures are read, and counting stops at the threshold.
func detectMetadataPrealloc(path string, h *qcow2.Header) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return false, err
	}
	cs := h.ClusterSize()
	real := uint64(allocatedBytes(st)) / cs
	threshold := max(real*10/9, real+2)
	endCluster := (uint64(st.Size()) + cs - 1) / cs

	g := h.Geometry()
	perBlock := g.RefBlockEntries()
	tableBytes := uint64(h.RefTableClusters) * cs
	if tableBytes > qcow2.MaxRefTableBytes {
		return false, nil
	}
	table := make([]byte, tableBytes)
	if _, err := f.ReadAt(table, int64(h.RefTableOffset)); err != nil {
		return false, err
	}
	block := make([]byte, cs)
	var count uint64
	for i := uint64(0); i*8 < tableBytes && i*perBlock < endCluster && count < threshold; i++ {
		e := qcow2.RefTableEntry(binary.BigEndian.Uint64(table[i*8:]))
		if e.Offset() == 0 {
			continue
		}
		if _, err := f.ReadAt(block, int64(e.Offset())); err != nil {
			return false, err
		}
		rb := qcow2.RefBlock{Data: block, Order: h.RefcountOrder}
		for j := uint64(0); j < perBlock && i*perBlock+j < endCluster && count < threshold; j++ {
			if rb.Get(qcow2.RefBlockIndex(j)) != 0 {
				count++
			}
		}
	}
	return count >= threshold, nil
}
