// QEMU's metadata-preallocation heuristic and the host-file hole lookup it enables.
package qcow2export

import (
	"encoding/binary"
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/qnbd/qnbd/qcow2"
)

// metadataPrealloc reports, deciding once, whether the image looks preallocated with
// preallocation=metadata: QEMU (qcow2_detect_metadata_preallocation) counts the host clusters
// with a non-zero refcount and, when they clearly outnumber the clusters the file occupies on
// disk (at least max(real*10/9, real+2)), looks under each data cluster of the image for
// holes of the host file and reports them as zeros in base:allocation.
func (b *Backend) metadataPrealloc() bool {
	b.preallocOnce.Do(func() {
		if b.opts.Path == "" {
			return
		}
		// QEMU counts through its refcount cache; the file has those counts after a flush.
		if !b.img.ReadOnly() {
			if err := b.img.Flush(); err != nil {
				return
			}
		}
		b.prealloc, _ = detectMetadataPrealloc(b.opts.Path)
	})
	return b.prealloc
}

// detectMetadataPrealloc reads the refcount structures of the image at path, stopping as soon
// as the threshold is reached. Everything it reads is bounded by the validated header and the
// file's length.
func detectMetadataPrealloc(path string) (bool, error) {
	s, err := qcow2.OpenFile(path, qcow2.FileOptions{ReadOnly: true})
	if err != nil {
		return false, err
	}
	defer s.Close()
	h, err := qcow2.ReadHeader(s)
	if err != nil {
		return false, err
	}
	st, err := s.File().Stat()
	if err != nil {
		return false, err
	}
	cs := h.ClusterSize()
	var onDisk uint64
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		onDisk = uint64(sys.Blocks) * 512
	} else {
		onDisk = uint64(st.Size())
	}
	real := onDisk / cs
	threshold := max(real*10/9, real+2)
	endCluster := (uint64(st.Size()) + cs - 1) / cs

	g := h.Geometry()
	perBlock := g.RefBlockEntries()
	tableBytes := uint64(h.RefTableClusters) * cs
	if tableBytes > qcow2.MaxRefTableBytes {
		return false, nil
	}
	table := make([]byte, tableBytes)
	if _, err := s.ReadAt(table, int64(h.RefTableOffset)); err != nil {
		return false, err
	}
	block := make([]byte, cs)
	var count uint64
	for i := uint64(0); i*8 < tableBytes && i*perBlock < endCluster && count < threshold; i++ {
		e := qcow2.RefTableEntry(binary.BigEndian.Uint64(table[i*8:]))
		if e.Offset() == 0 {
			continue
		}
		if _, err := s.ReadAt(block, int64(e.Offset())); err != nil {
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

// hostHoles splits [off, off+n) of the host file name into data and hole runs (SEEK_DATA and
// SEEK_HOLE), in order; past the end of the file is a hole. When the file cannot be opened
// or sought, the whole range is data.
func (b *Backend) hostHoles(name string, off, n uint64, emit func(n uint64, hole bool)) {
	f := b.hostFile(name)
	if f == nil {
		emit(n, false)
		return
	}
	defer b.mu.RUnlock()
	st, err := f.Stat()
	if err != nil {
		emit(n, false)
		return
	}
	fd, eof, end := int(f.Fd()), uint64(st.Size()), off+n
	for pos := off; pos < end; {
		if pos >= eof {
			emit(end-pos, true)
			return
		}
		data, err := unix.Seek(fd, int64(pos), unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO):
			emit(end-pos, true) // no data from pos on
			return
		case err != nil:
			emit(end-pos, false)
			return
		case uint64(data) > pos:
			next := min(uint64(data), end)
			emit(next-pos, true)
			pos = next
			continue
		}
		hole, err := unix.Seek(fd, int64(pos), unix.SEEK_HOLE)
		if err != nil || uint64(hole) <= pos {
			hole = int64(eof)
		}
		next := min(uint64(hole), end)
		emit(next-pos, false)
		pos = next
	}
}

// hostFile returns the open host file called name with b.mu read-locked (the caller unlocks),
// or nil, unlocked, when it cannot be opened or the Backend is closed.
func (b *Backend) hostFile(name string) *os.File {
	b.mu.RLock()
	if b.hosts == nil {
		b.mu.RUnlock()
		return nil
	}
	f, ok := b.hosts[name]
	if !ok {
		b.mu.RUnlock()
		b.mu.Lock()
		if b.hosts == nil {
			b.mu.Unlock()
			return nil
		}
		if f, ok = b.hosts[name]; !ok {
			f, _ = os.Open(name)
			b.hosts[name] = f // nil too: do not retry a file that cannot be opened
		}
		b.mu.Unlock()
		b.mu.RLock()
		if b.hosts == nil {
			b.mu.RUnlock()
			return nil
		}
	}
	if f == nil {
		b.mu.RUnlock()
		return nil
	}
	return f
}
