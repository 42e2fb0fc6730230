// Header state bits the engine changes at run time: dirty (lazy refcounts), corrupt, autoclear.
package qcow2

import "fmt"

// headerWriteError is a header update whose write failed: the file still holds the previous
// header. (When the sync after it fails instead, the file may hold either.)
type headerWriteError struct{ err error }

func (e *headerWriteError) Error() string { return "qcow2: write header: " + e.err.Error() }
func (e *headerWriteError) Unwrap() error { return e.err }

// writeHeaderSync writes the fixed header fields of h and syncs. Only the bytes up to and
// including compression_type are written: padding and any later fields of a longer header
// (unknown to us) stay as they are.
func (img *Image) writeHeaderSync(h *Header) error {
	b := h.encodeFixed()
	if len(b) > offCompressionType+1 {
		b = b[:offCompressionType+1]
	}
	if _, err := img.file.WriteAt(b, 0); err != nil {
		return &headerWriteError{err}
	}
	if err := img.file.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync header: %w", err)
	}
	return nil
}

// accurateRefcounts reports whether refcount updates must reach the disk before the L2
// entries that depend on them. Once the dirty bit is on disk they need not: a repair rebuilds
// them before the image is used again (QEMU's qcow2_need_accurate_refcounts).
func (img *Image) accurateRefcounts() bool { return !img.hdr.Dirty() }

// prepareWrite runs before the first change to the image, with mu held: it refuses writes to
// a corrupt image, clears the autoclear bits qnbd does not know (the spec: unknown autoclear
// bits must be cleared on write; persistent bitmaps were marked in-use at open,
// bitmap_open.go, and their autoclear bit stays), and, with lazy refcounts, sets the dirty bit,
// durable before any lazy refcount update.
func (img *Image) prepareWrite() error {
	if img.readOnly {
		return ErrReadOnly
	}
	if img.closed {
		return ErrClosed
	}
	if img.corrupt != nil {
		return fmt.Errorf("%w (marked earlier: %v)", ErrCorrupt, img.corrupt)
	}
	if img.broken != nil {
		return fmt.Errorf("qcow2: image refuses writes until reopened: %w", img.broken)
	}
	if img.prepared {
		return nil
	}
	h := img.hdr
	h.Autoclear &= autoclearKnown
	if !h.bitmapsConsistent() {
		h.Autoclear &^= AutoclearBitmaps // a bit without bitmaps to go with it
	}
	if img.hdr.LazyRefcounts() {
		h.Incompatible |= incompatDirty
	}
	if h.Autoclear != img.hdr.Autoclear || h.Incompatible != img.hdr.Incompatible {
		if err := img.writeHeaderSync(&h); err != nil {
			return err
		}
		img.hdr = h
		img.stateChanged()
	}
	img.prepared = true
	return nil
}

// markClean clears the dirty bit after everything was flushed (a clean close).
func (img *Image) markClean() error {
	if !img.hdr.Dirty() {
		return nil
	}
	h := img.hdr
	h.Incompatible &^= incompatDirty
	if err := img.writeHeaderSync(&h); err != nil {
		return err
	}
	img.hdr = h
	img.prepared = false
	img.stateChanged()
	return nil
}

// markCorrupt records a metadata inconsistency found at run time and returns err (which
// matches ErrCorrupt and syscall.EIO) for the request to fail with. A writable image gets the
// corrupt bit on disk, so that nobody writes to it before a repair; from now on every write
// fails, and nothing more is flushed (the caches may describe a state built on the
// inconsistency). Reads go on where the metadata allows. Called with mu held.
func (img *Image) markCorrupt(err error) error {
	if img.corrupt != nil {
		return err
	}
	img.corrupt = err
	img.log.Error("qcow2: image is corrupt; further writes are refused", "image", img.name(), "err", err)
	if !img.readOnly {
		h := img.hdr
		h.Incompatible |= incompatCorrupt
		if werr := img.writeHeaderSync(&h); werr != nil {
			img.log.Error("qcow2: could not set the corrupt bit", "image", img.name(), "err", werr)
		} else {
			img.hdr = h
		}
	}
	img.stateChanged()
	return err
}

// state is the gauge snapshot reported through Hooks.StateChanged.
func (img *Image) state() State {
	return State{
		Dirty:            img.hdr.Dirty(),
		Corrupt:          img.hdr.Corrupt() || img.corrupt != nil,
		L1Entries:        uint64(len(img.l1.entries)),
		RefTableClusters: uint64(img.hdr.RefTableClusters),
		HostBytes:        img.fileEnd(),
	}
}

func (img *Image) stateChanged() {
	if img.l1 == nil {
		return
	}
	img.hooks.StateChanged(img.state())
}
