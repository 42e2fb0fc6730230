// Refcount bookkeeping for Check: the sparse in-memory reference counts (IMRT) and the
// stored refcounts read from the image's reftable and refcount blocks.
package qcow2

import (
	"errors"
	"fmt"
	"io"
	"syscall"
)

// imrt counts the references the check found to each host cluster (QEMU's "in-memory refcount
// table"). It is sparse: counts live in 64 Ki-cluster chunks allocated on first use, so a huge
// sparse image file with little metadata costs little memory. Counts of 0xffff and more are
// kept in a map.
type imrt struct {
	chunks [][]uint16
	big    map[hostCluster]refcount
	n      uint64 // one past the highest cluster ever set
}

const (
	imrtChunkBits = 16
	imrtChunkSize = 1 << imrtChunkBits
	imrtSaturated = 0xffff
)

func newIMRT(clusters uint64) *imrt {
	return &imrt{
		chunks: make([][]uint16, clusters>>imrtChunkBits+1),
		big:    map[hostCluster]refcount{},
	}
}

func (t *imrt) get(c hostCluster) refcount {
	ci := uint64(c) >> imrtChunkBits
	if ci >= uint64(len(t.chunks)) || t.chunks[ci] == nil {
		return 0
	}
	v := t.chunks[ci][uint64(c)&(imrtChunkSize-1)]
	if v == imrtSaturated {
		return t.big[c]
	}
	return refcount(v)
}

func (t *imrt) set(c hostCluster, v refcount) {
	ci := uint64(c) >> imrtChunkBits
	for ci >= uint64(len(t.chunks)) {
		t.chunks = append(t.chunks, nil)
	}
	if t.chunks[ci] == nil {
		if v == 0 {
			return
		}
		t.chunks[ci] = make([]uint16, imrtChunkSize)
	}
	i := uint64(c) & (imrtChunkSize - 1)
	if v >= imrtSaturated {
		t.chunks[ci][i] = imrtSaturated
		t.big[c] = v
	} else {
		if t.chunks[ci][i] == imrtSaturated {
			delete(t.big, c)
		}
		t.chunks[ci][i] = uint16(v)
	}
	if uint64(c) >= t.n {
		t.n = uint64(c) + 1
	}
}

// nonZeroIn reports whether any cluster in [from, to) has a count.
func (t *imrt) nonZeroIn(from, to hostCluster) bool {
	for c := from; c < to; {
		ci := uint64(c) >> imrtChunkBits
		if ci >= uint64(len(t.chunks)) {
			return false
		}
		chunkEnd := hostCluster((ci + 1) << imrtChunkBits)
		end := min(chunkEnd, to)
		if ch := t.chunks[ci]; ch != nil {
			for i := uint64(c) & (imrtChunkSize - 1); c < end; c, i = c+1, i+1 {
				if ch[i] != 0 {
					return true
				}
			}
		}
		c = end
	}
	return false
}

// readAtZero fills p with the bytes at off, reading only what lies inside the file (of length
// fileSize) and leaving the rest zero: what QEMU's reads past the end of a file return.
func readAtZero(s Storage, p []byte, off, fileSize uint64) error {
	clear(p)
	if off >= fileSize {
		return nil
	}
	n := min(uint64(len(p)), fileSize-off)
	if _, err := s.ReadAt(p[:n], int64(off)); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// chkErrno is an errno with the message text QEMU prints for it.
type chkErrno struct {
	text  string
	errno syscall.Errno
}

func (e *chkErrno) Error() string        { return e.text }
func (e *chkErrno) Is(target error) bool { return target == e.errno }

// diskRefs reads (and, for repairs, writes) the refcounts stored in the image, through the
// reftable loaded at construction and a one-block cache.
type diskRefs struct {
	s        Storage
	g        Geometry
	fileSize uint64
	table    []refTableEntry

	cached    refTableIndex
	cacheData []byte // nil: no block cached
	dirty     bool
}

func loadDiskRefs(s Storage, h *Header, fileSize uint64) (*diskRefs, error) {
	g := h.Geometry()
	// Validate bounds the reftable to maxRefTableBytes inside the file.
	n := uint64(h.RefTableClusters) * g.ClusterSize() / reftableEntrySize
	buf := make([]byte, n*reftableEntrySize)
	if err := readAtZero(s, buf, uint64(h.RefTableOffset), fileSize); err != nil {
		return nil, fmt.Errorf("qcow2: read refcount table: %w", err)
	}
	d := &diskRefs{s: s, g: g, fileSize: fileSize, table: make([]refTableEntry, n)}
	r := readBuf(buf)
	for i := range d.table {
		d.table[i] = refTableEntry(r.u64())
	}
	return d, nil
}

// block returns the refcount block at reftable index i, nil if none is allocated (all its
// refcounts are 0). A block past the end of the file reads as zeros, as in QEMU.
func (d *diskRefs) block(i refTableIndex) (RefBlock, error) {
	if uint64(i) >= uint64(len(d.table)) {
		return RefBlock{}, nil
	}
	off := d.table[i].Offset()
	if off == 0 {
		return RefBlock{}, nil
	}
	if off.inCluster(d.g) != 0 {
		return RefBlock{}, errRefblockUnaligned
	}
	if d.cacheData != nil && d.cached == i {
		return RefBlock{Data: d.cacheData, Order: d.g.RefcountOrder}, nil
	}
	if err := d.flush(); err != nil {
		return RefBlock{}, err
	}
	if d.cacheData == nil {
		d.cacheData = make([]byte, d.g.ClusterSize())
	}
	if err := readAtZero(d.s, d.cacheData, uint64(off), d.fileSize); err != nil {
		d.cacheData = nil
		return RefBlock{}, err
	}
	d.cached = i
	return RefBlock{Data: d.cacheData, Order: d.g.RefcountOrder}, nil
}

// get returns the stored refcount of cluster c.
func (d *diskRefs) get(c hostCluster) (refcount, error) {
	b, err := d.block(c.refTableIndex(d.g))
	if err != nil || b.Data == nil {
		return 0, err
	}
	return b.Get(c.refBlockIndex(d.g)), nil
}

// set stores refcount v for cluster c, whose refcount block must exist inside the file (it
// does whenever the stored refcount was non-zero, which is when repairs call it). The block
// is written back by flush.
func (d *diskRefs) set(c hostCluster, v refcount) error {
	i := c.refTableIndex(d.g)
	b, err := d.block(i)
	if err != nil {
		return err
	}
	if b.Data == nil || uint64(d.table[i].Offset())+d.g.ClusterSize() > d.fileSize {
		return fmt.Errorf("qcow2: no refcount block inside the file for cluster %d", c)
	}
	b.Set(c.refBlockIndex(d.g), v)
	d.dirty = true
	return nil
}

// flush writes the cached block back if it was changed.
func (d *diskRefs) flush() error {
	if !d.dirty {
		return nil
	}
	off := d.table[d.cached].Offset()
	if _, err := d.s.WriteAt(d.cacheData, int64(off)); err != nil {
		return fmt.Errorf("qcow2: write refcount block at %#x: %w", uint64(off), err)
	}
	d.dirty = false
	return nil
}
