// Changes to an image's place in an external chain, for qnbd-img rebase and commit: switching
// the backing file named in the header, and emptying an overlay after its data went into
// the image below (docs/chains.md).
package qcow2

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrHeaderFull is returned by SetBackingFile when the new name and format do not fit in the
// first cluster with the header and its extensions (QEMU: ENOSPC, "No space left in the
// file header").
var ErrHeaderFull = errors.New("qcow2: no space left in the file header")

// SetBackingFile names a new backing file (name, with its format; "" for none) in the header,
// as QEMU's qcow2_change_backing_file does: the whole first cluster is rewritten with the
// header, its extensions (the backing format extension added, changed or dropped) and the
// name after them. Cached metadata is flushed first, the header is synced after. The
// backing file the image has open is not changed: the change shows at the next open.
//
// The first cluster is written with one pwrite; it is not made crash-atomic beyond that, as
// in QEMU.
func (img *Image) SetBackingFile(name, format string) error {
	img.gate.Lock()
	defer img.gate.Unlock()
	if img.readOnly {
		return ErrReadOnly
	}
	img.mu.Lock()
	defer img.mu.Unlock()
	if img.closed {
		return ErrClosed
	}
	if len(name) > maxBackingFileSize {
		return fmt.Errorf("qcow2: backing file name is %d bytes, at most %d allowed: %w", len(name), maxBackingFileSize, syscall.EINVAL)
	}
	if name != "" && img.dataRaw {
		return fmt.Errorf("%w: an image whose external data file is raw (data_file_raw) cannot have a backing file", ErrUnsupported)
	}
	if err := img.flushLocked(); err != nil {
		return err
	}
	h := img.hdr
	h.Extensions = img.hdr.Extensions
	h.BackingFile = name
	h.Extensions.BackingFormat = format
	if h.Version >= 3 {
		// QEMU writes its own feature name table into every version 3 header it writes.
		h.Extensions.FeatureNames = defaultFeatureNames()
	}
	if name == "" {
		h.Extensions.BackingFormat = ""
	}
	c0, err := h.EncodeCluster0()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrHeaderFull, err)
	}
	if _, err := img.file.WriteAt(c0, 0); err != nil {
		return &headerWriteError{err}
	}
	if err := img.file.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync header: %w", err)
	}
	img.hdr = h
	return img.findBitmapsExt()
}

// MakeEmpty makes every cluster of the image unallocated, so that the backing file shows
// through everywhere (QEMU's qcow2_make_empty fallback: a full discard of the whole disk).
// Freed host clusters are punched out of the file. Then everything is flushed.
func (img *Image) MakeEmpty() error {
	img.gate.RLock()
	defer img.gate.RUnlock()
	if err := img.checkRequest(0, 0, true); err != nil {
		return err
	}
	size := img.size.Load()
	if size == 0 {
		return nil
	}
	if err := img.discardClusters(0, alignUp(size, img.geo.ClusterSize()), true); err != nil {
		return err
	}
	return img.flush()
}
