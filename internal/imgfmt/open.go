// Opening an image of any format, with or without probing.
package imgfmt

import (
	"encoding/binary"
	"io"
	"os"

	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/qcow2"
)

// OpenOptions select how Open opens an image.
type OpenOptions struct {
	// Format is the format to open the image as; empty probes it (see Probe).
	Format Format
	// ReadOnly opens the image (and every file under it) read-only.
	ReadOnly bool
	// NoBacking does not open a qcow2 image's backing chain: ranges it does not allocate read
	// as zeros and map as unallocated at depth 0.
	NoBacking bool
	// NoFlush makes Flush (and the flush in Close) a no-op, like QEMU's cache=unsafe, which is
	// what qemu-img convert uses for its target by default.
	NoFlush bool
	// ForceShare is qemu-img's -U: the image locks share every permission on every file, so
	// that an image another process writes can be read (internal/imagelock).
	ForceShare bool
	// Lock is what the open asks of the image, for the image locks taken on its files
	// (internal/imagelock); nil means qemu-img's default: consistent read sharing everything,
	// plus write and resize unless ReadOnly.
	Lock *imagelock.Request
	// ReadBitmaps loads a read-only qcow2 image's persistent bitmaps (a read-write open always
	// does), for the bitmap operations of engine_bitmaps.go.
	ReadBitmaps bool
	// Warn, when set, receives the engine's open-time warnings about every qcow2 image opened
	// (qcow2.OpenOptions.Warn): qnbd-img prints them as qemu-img does. It is per open, not a
	// package variable, because in-process runs of qnbd-img (tests) open images concurrently.
	Warn func(warning, hint string)
}

// ErrNotQcow2 is returned when a file opened as qcow2 lacks the qcow2 magic.
var ErrNotQcow2 error = QemuError("Image is not in qcow2 format")

// QemuError is an error whose text is QEMU's own message for the same condition, meant to be
// printed verbatim (hence capitalised, unlike ordinary Go error strings).
type QemuError string

func (e QemuError) Error() string { return string(e) }

// Open opens the image at path.
func Open(path string, o OpenOptions) (Disk, error) {
	if err := checkRegularOrDevice(path); err != nil {
		return nil, err
	}
	format, probed := o.Format, false
	if format == "" {
		f, err := Probe(path)
		if err != nil {
			return nil, err
		}
		format, probed = f, true
	}
	switch format {
	case Raw:
		return openRaw(path, o, probed)
	case Qcow2:
		if err := checkQcow2Magic(path); err != nil {
			return nil, err
		}
		return openQcow2(path, o)
	}
	return nil, &UnknownFormatError{Name: string(format)}
}

// checkQcow2Magic fails with ErrNotQcow2 unless path starts with the qcow2 magic, so that
// "-f qcow2" on a raw file gets QEMU's message rather than a header decoding error.
func checkQcow2Magic(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var b [4]byte
	if _, err := f.ReadAt(b[:], 0); err != nil && err != io.EOF {
		return err
	}
	if binary.BigEndian.Uint32(b[:]) != qcow2.Magic {
		return ErrNotQcow2
	}
	return nil
}

// checkRegularOrDevice refuses directories and other special files with QEMU's message, and
// passes a missing file through as the *os.PathError opening it would give.
func checkRegularOrDevice(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if m := st.Mode(); !m.IsRegular() && m&os.ModeDevice == 0 {
		return QemuError("'file' driver requires '" + path + "' to be a regular file")
	}
	return nil
}
