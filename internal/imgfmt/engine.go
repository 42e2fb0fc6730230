// The one file that names the qcow2 engine's runtime API (ENGINE_API.md): open, map, chain,
// snapshots, create and check. Until those pieces of qcow2/ land, each function here reports
// errEngineMissing and the rest of the package (and qnbd-img's raw paths) work without them.
package imgfmt

import (
	"errors"

	"github.com/qnbd/qnbd/qcow2"
)

// errEngineMissing is returned by every qcow2 operation this build cannot do yet.
var errEngineMissing = errors.New("the qcow2 engine is not available in this build of qnbd-img yet")

// EngineReady reports whether qcow2 images can be opened, created and checked.
const EngineReady = false

// engineImage is what the adapter uses of an open qcow2 image (qcow2.Image).
type engineImage interface {
	Header() qcow2.Header
	Size() uint64
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	WriteZeroes(off, n uint64, unmap bool) error
	Flush() error
	Close() error
	Resize(newSize uint64) error
}

// engineOpen opens a qcow2 image.
func engineOpen(path string, o OpenOptions) (engineImage, error) {
	return nil, errEngineMissing
}

// engineMap returns the engine's block status for [off, off+n) as Extents.
func engineMap(img engineImage, off, n uint64) ([]Extent, error) {
	return nil, errEngineMissing
}

// engineChain lists the image and its backing files, top first.
func engineChain(img engineImage) []Layer {
	return nil
}

// engineSnapshots reads the snapshot table of the image whose header is h.
func engineSnapshots(s qcow2.Storage, h *qcow2.Header) ([]Snapshot, error) {
	if h.SnapshotCount == 0 {
		return nil, nil
	}
	return nil, errEngineMissing
}

// engineCreate creates a qcow2 image.
func engineCreate(path string, o Qcow2CreateOptions) error {
	return errEngineMissing
}

// engineCheck checks (and with mode, repairs) a qcow2 image.
func engineCheck(path string, mode RepairMode) (*CheckResult, error) {
	return nil, errEngineMissing
}
