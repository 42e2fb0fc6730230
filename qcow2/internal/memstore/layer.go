// layer: a sparse byte array in 4 KiB pages, the representation of one view of a file.
package memstore

import (
	"io"
	"maps"
)

// pageSize is the granularity of the sparse representation.
const pageSize = 4096

type page = [pageSize]byte

// layer is a file's contents: a length and the pages that were ever written below it. A
// missing page reads as zeros. Not safe for concurrent use; Store locks around it.
//
// Pages are shared copy-on-write between a layer and its clones: a layer changes in place
// only the pages in owned (the ones it made itself since it was last cloned) and copies any
// other page before changing it. A shared page is never written again, so clones behave as
// deep copies while cloning costs a map copy, not a copy of every page: crash enumeration
// clones a multi-MiB image per state, and under -race copying the bytes dominated its time.
type layer struct {
	size  int64
	pages map[int64]*page
	owned map[int64]bool
}

func newLayer() *layer { return &layer{pages: map[int64]*page{}, owned: map[int64]bool{}} }

// clone returns a copy that shares l's pages; from now on neither changes them in place. It
// changes l's bookkeeping, so the caller must hold whatever lock guards l.
func (l *layer) clone() *layer {
	clear(l.owned)
	return &layer{size: l.size, pages: maps.Clone(l.pages), owned: map[int64]bool{}}
}

// writable returns page idx ready to be changed in place: a new zero page if there is none,
// a private copy if the page is shared with a clone.
func (l *layer) writable(idx int64) *page {
	pg := l.pages[idx]
	switch {
	case pg == nil:
		pg = new(page)
	case !l.owned[idx]:
		cp := *pg
		pg = &cp
	default:
		return pg
	}
	l.pages[idx] = pg
	l.owned[idx] = true
	return pg
}

// readAt copies [off, off+len(p)) into p, stopping at the end of the file with io.EOF as
// *os.File does.
func (l *layer) readAt(p []byte, off int64) (int, error) {
	if off >= l.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := len(p)
	var err error
	if int64(n) > l.size-off {
		n = int(l.size - off)
		err = io.EOF
	}
	for done := 0; done < n; {
		pos := off + int64(done)
		idx, in := pos/pageSize, int(pos%pageSize)
		k := min(n-done, pageSize-in)
		if pg := l.pages[idx]; pg != nil {
			copy(p[done:done+k], pg[in:in+k])
		} else {
			clear(p[done : done+k])
		}
		done += k
	}
	return n, err
}

// writeAt stores p at off, growing the file if needed.
func (l *layer) writeAt(p []byte, off int64) {
	for done := 0; done < len(p); {
		pos := off + int64(done)
		idx, in := pos/pageSize, int(pos%pageSize)
		k := min(len(p)-done, pageSize-in)
		pg := l.writable(idx)
		copy(pg[in:in+k], p[done:done+k])
		done += k
	}
	if end := off + int64(len(p)); end > l.size {
		l.size = end
	}
}

// zero clears [off, off+n) without changing the size, dropping whole pages.
func (l *layer) zero(off, n int64) {
	end := off + n
	for pos := off; pos < end; {
		idx, in := pos/pageSize, pos%pageSize
		k := min(end-pos, pageSize-in)
		if l.pages[idx] != nil {
			if in == 0 && k == pageSize {
				delete(l.pages, idx)
				delete(l.owned, idx)
			} else {
				clear(l.writable(idx)[in : in+k])
			}
		}
		pos += k
	}
}

// truncate sets the length; bytes beyond a shrink are gone, so a later grow reads zeros.
func (l *layer) truncate(size int64) {
	if size < l.size {
		l.zero(size, l.size-size)
	}
	l.size = size
}

// punch zeroes [off, off+n) clipped to the file, keeping the size (FALLOC_FL_KEEP_SIZE).
func (l *layer) punch(off, n int64) {
	if off >= l.size {
		return
	}
	l.zero(off, min(n, l.size-off))
}

// apply performs a recorded mutation.
func (l *layer) apply(op Op) {
	switch op.Kind {
	case OpWrite:
		l.writeAt(op.Data, op.Off)
	case OpTruncate:
		l.truncate(op.Off)
	case OpPunchHole:
		l.punch(op.Off, op.Len)
	}
}

// allocated is the number of bytes held in pages.
func (l *layer) allocated() int64 { return int64(len(l.pages)) * pageSize }
