// The engine's compressed writes for qemu-img convert -c; like engine.go, the only place
// naming them.
package imgfmt

import (
	"errors"

	"github.com/qnbd/qnbd/qcow2"
)

// CompressedWriter is a Disk that can store clusters compressed (qcow2).
type CompressedWriter interface {
	// ClusterSize is the unit of compression.
	ClusterSize() uint64
	// CompressCluster compresses one cluster (the disk's last, shorter one is padded with
	// zeros). It returns ErrIncompressible when the result would not be smaller: write the
	// cluster with WriteAt then. Safe to call from many goroutines at once.
	CompressCluster(b []byte) ([]byte, error)
	// WriteCompressed stores a compressed cluster at the cluster-aligned guest offset off,
	// which must not hold data yet.
	WriteCompressed(off uint64, c []byte) error
}

// ErrIncompressible: the cluster does not shrink.
var ErrIncompressible = qcow2.ErrIncompressible

// IsIncompressible reports ErrIncompressible.
func IsIncompressible(err error) bool { return errors.Is(err, qcow2.ErrIncompressible) }

// AsCompressedWriter returns d's compressed writer, if its format has one.
func AsCompressedWriter(d Disk) (CompressedWriter, bool) {
	q, ok := d.(*qcow2Disk)
	if !ok {
		return nil, false
	}
	img, ok := q.img.(*qcow2.Image)
	if !ok {
		return nil, false
	}
	return compressedDisk{q, img}, true
}

type compressedDisk struct {
	d   *qcow2Disk
	img *qcow2.Image
}

func (c compressedDisk) ClusterSize() uint64                      { return c.d.ClusterSize() }
func (c compressedDisk) CompressCluster(b []byte) ([]byte, error) { return c.img.CompressCluster(b) }
func (c compressedDisk) WriteCompressed(off uint64, b []byte) error {
	return c.img.WriteCompressedAt(off, b)
}
