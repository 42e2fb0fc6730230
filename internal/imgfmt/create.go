// Creating images (raw and qcow2) and checking them.
package imgfmt

import (
	"os"

	"github.com/qnbd/qnbd/internal/hostfile"
	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/qcow2"
)

// MaxImageSize is the largest virtual size QEMU's block layer accepts (BDRV_MAX_LENGTH: the
// largest multiple of 1 GiB that fits an int64).
const MaxImageSize = (1<<63 - 1) &^ (1<<30 - 1)

// CreateRaw creates a raw image of size bytes, rounded up to a whole sector as QEMU rounds
// it, replacing the contents of an existing file. preallocation "metadata" is not a raw mode.
func CreateRaw(path string, size uint64, prealloc Prealloc) error {
	if prealloc == PreallocMetadata {
		return QemuError("Unsupported preallocation mode: metadata")
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	// Locked before the truncation: an image another process uses is left alone.
	if err := imagelock.Lock(f, imagelock.CreatePerm, imagelock.CreateShared); err != nil {
		f.Close()
		return err
	}
	if err := f.Truncate(0); err != nil {
		f.Close()
		return err
	}
	if err := truncateRaw(hostfile.New(f), 0, int64(roundUp(size, SectorSize)), prealloc); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// CreateQcow2 creates a qcow2 image; the virtual size is rounded up to a whole sector, as
// QEMU's qcow2 driver rounds it.
func CreateQcow2(path string, o Qcow2CreateOptions) error {
	o.Size = roundUp(o.Size, SectorSize)
	// The engine truncates the files it creates: lock them first (those that exist), and hold
	// the locks until the image is written.
	release, err := lockForCreate(path)
	if err != nil {
		return err
	}
	defer release()
	if o.DataFile != "" {
		releaseData, err := lockForCreate(dataFilePath(path, o.DataFile))
		if err != nil {
			return err
		}
		defer releaseData()
	}
	if !o.UnsafeBacking || o.BackingFile == "" {
		return engineCreate(path, o)
	}
	// The engine opens the backing file it records; -u must not. Create the image without
	// one, then write the name and format into the header's first cluster.
	backing, format := o.BackingFile, o.BackingFormat
	o.BackingFile, o.BackingFormat = "", ""
	if err := engineCreate(path, o); err != nil {
		return err
	}
	return setBackingName(path, backing, format)
}

// setBackingName records a backing file name and format in the header of a closed qcow2
// image, rewriting its first cluster (header, extensions, backing name).
func setBackingName(path, name, format string) error {
	s, err := qcow2.OpenFile(path, qcow2.FileOptions{})
	if err != nil {
		return err
	}
	h, err := qcow2.ReadHeader(s)
	if err == nil {
		h.BackingFile, h.Extensions.BackingFormat = name, format
		var c0 []byte
		if c0, err = h.EncodeCluster0(); err == nil {
			if _, err = s.WriteAt(c0, 0); err == nil {
				err = s.Sync()
			}
		}
	}
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// Check checks the image at path, which must be of the given format (never probed here: the
// caller opened or probed it). Raw images cannot be checked: ErrNotSupported. The image file
// is locked as qemu-img check locks it; forceShare is -U (a check without repair only). warn,
// if not nil, receives the open-time warnings (OpenOptions.Warn).
func Check(path string, format Format, mode RepairMode, forceShare bool, warn func(warning, hint string)) (*CheckResult, error) {
	if err := checkRegularOrDevice(path); err != nil {
		return nil, err
	}
	switch format {
	case Qcow2:
		if err := checkQcow2Magic(path); err != nil {
			return nil, err
		}
		return engineCheck(path, mode, forceShare, warn)
	case Raw:
		return nil, ErrNotSupported
	}
	return nil, &UnknownFormatError{Name: string(format)}
}
