// Guest reads: plan under the metadata lock, then pread outside it.
package qcow2

import (
	"fmt"
	"sync"
)

// ReadAt reads len(p) bytes of the virtual disk at off (io.ReaderAt). Reading past Size fails
// with ErrOutOfRange. Reads run concurrently with each other and with writes; a read takes the
// metadata lock only to plan, never waits for an allocation in flight (a cluster being
// allocated still reads as before), and reads data without any lock.
func (img *Image) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("%w: negative offset %d", ErrOutOfRange, off)
	}
	img.gate.RLock()
	defer img.gate.RUnlock()
	if err := img.checkRequest(uint64(off), uint64(len(p)), false); err != nil {
		return 0, err
	}
	if err := img.readAt(p, uint64(off)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// maxPlanBytes bounds the guest bytes one plan covers, to bound its size.
const maxPlanBytes = 64 << 20

func (img *Image) readAt(p []byte, off uint64) error {
	for len(p) > 0 {
		n := min(uint64(len(p)), maxPlanBytes)
		ext, pin, err := img.lockedMapRead(off, n)
		if err != nil {
			return err
		}
		err = img.readExtents(p[:n], off, ext)
		if pin != 0 {
			img.mu.Lock()
			img.unpin(pin)
			img.mu.Unlock()
		}
		if err != nil {
			return err
		}
		p, off = p[n:], off+n
	}
	return nil
}

// readExtents performs a read plan into p, which holds the guest range starting at base.
func (img *Image) readExtents(p []byte, base uint64, ext []readExt) error {
	for _, e := range ext {
		dst := p[e.off-base : e.off-base+e.n]
		if err := img.readExtent(dst, e); err != nil {
			return err
		}
	}
	return nil
}

func (img *Image) readExtent(dst []byte, e readExt) error {
	switch e.kind {
	case kindZero:
		clear(dst)
	case kindUnallocated:
		if img.backing == nil {
			clear(dst)
			return nil
		}
		return img.backing.readLayer(dst, e.off)
	case kindData:
		if err := readAtFull(img.data, dst, e.host); err != nil {
			return fmt.Errorf("qcow2: read data at %#x: %w", uint64(e.host), err)
		}
	case kindCompressed:
		buf := getCluster(img.geo.ClusterSize())
		defer putCluster(buf)
		if err := img.readCompressed(*buf, e.host, e.clen); err != nil {
			return err
		}
		copy(dst, (*buf)[e.cin:e.cin+uint64(len(dst))])
	}
	return nil
}

// readCompressed decompresses the cluster whose compressed bytes are [host, host+clen) into
// dst (one cluster). The last sector may run past the end of the file; it is read short.
func (img *Image) readCompressed(dst []byte, host HostOffset, clen uint64) error {
	src := make([]byte, clen)
	n, err := img.file.ReadAt(src, int64(host))
	if n == 0 && err != nil {
		return fmt.Errorf("qcow2: read compressed cluster at %#x: %w", uint64(host), err)
	}
	return decompress(img.ctype, src[:n], dst)
}

var clusterPools sync.Map // cluster size -> *sync.Pool of *[]byte

func getCluster(size uint64) *[]byte {
	pv, ok := clusterPools.Load(size)
	if !ok {
		pv, _ = clusterPools.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	}
	return pv.(*sync.Pool).Get().(*[]byte)
}

func putCluster(b *[]byte) {
	if pv, ok := clusterPools.Load(uint64(len(*b))); ok {
		pv.(*sync.Pool).Put(b)
	}
}
