// Amending an open image's header as qemu-img amend does (QEMU's qcow2_amend_options): lazy
// refcounts on or off, upgrading a version 2 image to version 3 and downgrading a version 3
// image to version 2 (docs/chains.md).
package qcow2

import "fmt"

// AmendError is a refusal whose text is QEMU's own message for the same condition. It
// matches ErrUnsupported.
type AmendError struct{ Msg string }

func (e *AmendError) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrUnsupported) true.
func (e *AmendError) Is(target error) bool { return target == ErrUnsupported }

// rewriteHeader writes h as the whole first cluster (QEMU's qcow2_update_header), syncs it
// and makes it the image's header. Called with gate held exclusively and mu held.
func (img *Image) rewriteHeader(h *Header) error {
	c0, err := h.EncodeCluster0()
	if err != nil {
		return err
	}
	if _, err := img.file.WriteAt(c0, 0); err != nil {
		return &headerWriteError{err}
	}
	if err := img.file.Sync(); err != nil {
		return fmt.Errorf("qcow2: sync header: %w", err)
	}
	img.hdr = *h
	return img.findBitmapsExt()
}

// amendLocked runs f with the gate held exclusively, mu held and the caches flushed.
func (img *Image) amendLocked(f func() error) error {
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
	if err := img.flushLocked(); err != nil {
		return err
	}
	return f()
}

// SetLazyRefcounts turns the lazy refcounts compatible feature on or off. Turning it off first
// makes the image clean, so that the refcounts on disk are exact.
func (img *Image) SetLazyRefcounts(on bool) error {
	return img.amendLocked(func() error {
		if img.hdr.LazyRefcounts() == on {
			return nil
		}
		if on && img.hdr.Version < 3 {
			return &AmendError{"Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)"}
		}
		if !on {
			if err := img.markClean(); err != nil {
				return err
			}
		}
		h := img.hdr
		if on {
			h.Compatible |= compatLazyRefcounts
		} else {
			h.Compatible &^= compatLazyRefcounts
		}
		return img.rewriteHeader(&h)
	})
}

// Upgrade makes a version 2 image a version 3 one: the longer header (compression type zlib),
// the feature name table, 16-bit refcounts as before. Snapshot entries without the extra
// data version 3 requires would need the snapshot table rewritten: refused.
func (img *Image) Upgrade() error {
	return img.amendLocked(func() error {
		if img.hdr.Version >= 3 {
			return nil
		}
		for _, s := range img.snapshots {
			if len(s.ExtraData) < 16 {
				return &AmendError{"Upgrading an image whose snapshots lack version 3 extra data is not supported by qnbd-img"}
			}
		}
		h := img.hdr
		h.Version = 3
		h.HeaderLength = headerV3Length
		h.CompressionType = CompressionZlib
		h.UnknownFields = nil
		h.Extensions.FeatureNames = defaultFeatureNames()
		return img.rewriteHeader(&h)
	})
}

// PrepareDowngrade checks that a version 3 image can become a version 2 one, with QEMU's
// messages, and clears what version 2 has no room for: the dirty bit (the image is made
// clean), the compatible and the autoclear features. The caller then calls
// ExpandZeroClusters (version 2 has no zero flag) and Downgrade.
func (img *Image) PrepareDowngrade() error {
	return img.amendLocked(func() error {
		h := img.hdr
		if h.Version < 3 {
			return nil
		}
		if h.RefcountOrder != 4 {
			return &AmendError{"compat=0.10 requires refcount_bits=16"}
		}
		if h.HasDataFile() {
			return &AmendError{"Cannot downgrade an image with a data file"}
		}
		for _, s := range img.snapshots {
			if s.VMStateSize > 1<<32-1 || s.DiskSize != img.size.Load() {
				return &AmendError{"Internal snapshots prevent downgrade of image"}
			}
		}
		if err := img.markClean(); err != nil {
			return err
		}
		h = img.hdr
		if in := h.Incompatible &^ incompatCompression; in != 0 {
			return &AmendError{fmt.Sprintf("Cannot downgrade an image with incompatible features 0x%x set", in)}
		}
		h.Compatible, h.Autoclear = 0, 0
		return img.rewriteHeader(&h)
	})
}

// Downgrade writes the version 2 header, once PrepareDowngrade passed and no L2 entry has the
// zero flag any more. A compression type other than zlib (an incompatible feature) is
// dropped when the active layer has no compressed cluster, and refused with QEMU's message
// when it has one (QEMU looks at the active layer only).
func (img *Image) Downgrade() error {
	return img.amendLocked(func() error {
		if img.hdr.Version < 3 {
			return nil
		}
		h := img.hdr
		if h.Incompatible&incompatCompression != 0 {
			has, err := img.hasCompressedClusters()
			if err != nil {
				return &AmendError{"Failed to check block status"}
			}
			if has {
				return &AmendError{"Cannot downgrade an image with zstd compression type and existing compressed clusters"}
			}
			h.Incompatible &^= incompatCompression
		}
		h.Version = 2
		h.HeaderLength = headerV2Length
		h.CompressionType = CompressionZlib
		h.UnknownFields = nil
		h.Extensions.FeatureNames = nil
		return img.rewriteHeader(&h)
	})
}

// hasCompressedClusters reports whether an L2 table of the active L1 table maps a compressed
// cluster (QEMU's qcow2_has_compressed_clusters). Called with the gate held and mu held.
func (img *Image) hasCompressedClusters() (bool, error) {
	for i, e := range img.l1.entries {
		c, ok, err := img.snapL2(i, e)
		if err != nil {
			return false, err
		}
		if !ok {
			continue
		}
		t, err := img.l2GetAll(c)
		if err != nil {
			return false, err
		}
		for j := range l2Index(img.geo.l2Entries()) {
			if err := t.check(j); err != nil {
				return false, err
			}
			if t.get(j).e.Compressed() {
				return true, nil
			}
		}
	}
	return false, nil
}

// Deallocate clears the L2 entries of the whole clusters in [off, off+n) whatever they hold,
// so that the backing file (or zeros) shows through, freeing their host clusters.
func (img *Image) Deallocate(off, n uint64) error {
	img.gate.RLock()
	defer img.gate.RUnlock()
	if err := img.checkRequest(off, n, true); err != nil {
		return err
	}
	cs := img.geo.ClusterSize()
	end := off + n
	a, b := alignUp(off, cs), alignDown(end, cs)
	if end == img.size.Load() {
		b = alignUp(end, cs)
	}
	if a >= b {
		return nil
	}
	return img.discardClusters(a, b, true)
}
