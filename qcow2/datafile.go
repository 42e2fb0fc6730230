// The external data file: opening it, and where guest clusters live in it.
package qcow2

import "fmt"

// openDataFile opens the external data file when the header says there is one. Its name comes
// from OpenOptions.DataFile, else from the header extension (neither: a *FormatError, matching
// ErrFormat); relative names are relative to the image's directory (QEMU 7.2 opens a relative
// name from the header from its working directory instead). Guest clusters live in it at their guest offset (that is where QEMU
// puts them, raw or not); their refcounts are not tracked by the image's refcount table.
func (img *Image) openDataFile() error {
	if !img.hdr.HasDataFile() {
		return nil
	}
	name := img.opts.DataFile
	if name == "" {
		name = img.hdr.Extensions.DataFile
	}
	if name == "" {
		// QEMU refuses the open the same way ("'data-file' is required for this image").
		return &FormatError{Off: offIncompatibleFeatures, Field: "incompatible_features", Val: fmt.Sprintf("%#x", img.hdr.Incompatible),
			Msg: "the external data file bit is set but the image names no data file (no data file name extension) and none was given: 'data-file' is required for this image"}
	}
	path, err := resolveBackingName(img.dir, name)
	if err != nil {
		return err
	}
	fo := img.opts.File
	fo.ReadOnly = img.readOnly
	fo.Role = RoleDataFile
	s, err := openHostFile(img.opts, path, fo)
	if err != nil {
		return fmt.Errorf("qcow2: open external data file: %w", err)
	}
	n, err := s.Size()
	if err != nil {
		s.Close()
		return err
	}
	img.data, img.dataPath, img.dataSize = s, path, uint64(n)
	return nil
}

// dataHostFor is where guest cluster gc's data goes in the external data file.
func (img *Image) dataHostFor(gc guestCluster) HostOffset {
	return HostOffset(uint64(gc.Offset(img.geo)))
}

// dataFileName is the file guest data lives in (for Map).
func (img *Image) dataFileName() string {
	if img.data != img.file {
		return img.dataPath
	}
	return img.path
}
