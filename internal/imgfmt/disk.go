// The Disk interface, extents (block status) and the package's error classes.
package imgfmt

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/qnbd/qnbd/internal/probe"
)

// Format names an image format as qemu-img spells it on the command line (-f, -O).
type Format string

// The formats qnbd-img reads and writes.
const (
	Raw   Format = "raw"
	Qcow2 Format = "qcow2"
)

// ParseFormat checks a -f / -O / -F argument. It returns ErrUnknownFormat, whose message is
// qemu-img's, for anything but raw and qcow2.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case Raw, Qcow2:
		return Format(s), nil
	}
	return "", &UnknownFormatError{Name: s}
}

// UnknownFormatError is returned for a format name qnbd-img does not implement.
type UnknownFormatError struct{ Name string }

func (e *UnknownFormatError) Error() string { return fmt.Sprintf("Unknown file format '%s'", e.Name) }

// Is makes errors.Is(err, ErrUnknownFormat) work.
func (e *UnknownFormatError) Is(target error) bool { return target == ErrUnknownFormat }

var (
	// ErrUnknownFormat classes UnknownFormatError.
	ErrUnknownFormat = errors.New("unknown file format")
	// ErrProbedRawWrite classes the error (a *probe.FormatChangeError) returned when a write
	// would make a raw image that was only probed (no explicit format) probe as another
	// format. Those errors also match syscall.EPERM, the errno QEMU's raw driver returns.
	ErrProbedRawWrite = probe.ErrWouldChangeFormat
	// ErrNotSupported is returned for an operation a format does not implement (check on raw).
	// It matches syscall.ENOTSUP.
	ErrNotSupported error = &errnoError{msg: "operation not supported by this image format", errno: syscall.ENOTSUP}
)

// errnoError is an error with its own message that also matches an errno with errors.Is, so
// the command line can print the strerror text qemu-img prints.
type errnoError struct {
	msg   string
	errno syscall.Errno
}

func (e *errnoError) Error() string { return e.msg }

// Unwrap returns the errno.
func (e *errnoError) Unwrap() error { return e.errno }

// Kind says what a guest range is made of.
type Kind uint8

const (
	// KindUnallocated: allocated in no layer of the chain. Reads as zeros.
	KindUnallocated Kind = iota
	// KindZero: a layer says "reads as zeros" without storing bytes (qcow2 zero cluster, a hole
	// in a raw file).
	KindZero
	// KindData: bytes stored in a layer, at Offset of File when HasOffset is set (compressed
	// and encrypted data has no usable offset).
	KindData
)

func (k Kind) String() string {
	switch k {
	case KindUnallocated:
		return "unallocated"
	case KindZero:
		return "zero"
	case KindData:
		return "data"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// Extent is the block status of one guest run, with the attributes qemu-img map prints.
type Extent struct {
	// Start and Length locate the run in the guest (virtual disk) address space.
	Start, Length uint64
	// Kind is what the run is made of.
	Kind Kind
	// KnownZero marks a KindData run whose bytes are known to read as zeros (the host range
	// under it is a hole), which qemu reports as "zero": true, "data": true.
	KnownZero bool
	// Compressed marks compressed qcow2 data (KindData without an offset).
	Compressed bool
	// Depth is the layer that provides the run: 0 for the image itself, 1 for its backing file
	// and so on. For KindUnallocated it is the layer at which the search stopped.
	Depth int
	// HasOffset says Offset and File locate the bytes (data, or a preallocated zero run).
	HasOffset bool
	// Offset is the byte offset of the run's first byte in File.
	Offset uint64
	// File is the host file holding the run when HasOffset is set.
	File string
}

// Zero reports whether the run reads as zeros without looking at its bytes.
func (e Extent) Zero() bool {
	return e.Kind == KindZero || e.Kind == KindUnallocated || e.KnownZero
}

// Present reports whether some layer of the chain allocates the run (qemu's "present").
func (e Extent) Present() bool { return e.Kind != KindUnallocated }

// End is the guest offset just past the run.
func (e Extent) End() uint64 { return e.Start + e.Length }

// Disk is an open image of any format. Offsets and sizes are guest (virtual disk) bytes.
type Disk interface {
	io.ReaderAt
	io.WriterAt
	// Format is the format the image was opened as.
	Format() Format
	// Filename is the name the image was opened with.
	Filename() string
	// Size is the virtual disk size in bytes.
	Size() uint64
	// Map returns the block status of [off, off+n), which must lie inside the disk: extents in
	// order, covering the range exactly.
	Map(off, n uint64) ([]Extent, error)
	// WriteZeroes makes [off, off+n) read as zeros, deallocating where the format can.
	WriteZeroes(off, n uint64) error
	// Resize changes the virtual size. Shrinking drops the data past the new end.
	Resize(size uint64, prealloc Prealloc) error
	// Flush makes every completed write durable.
	Flush() error
	// Close flushes and releases the image.
	Close() error
}

// Prealloc is a preallocation mode ("off", "metadata", "falloc", "full").
type Prealloc string

// Preallocation modes, named as qemu-img's preallocation option spells them.
const (
	PreallocOff      Prealloc = "off"
	PreallocMetadata Prealloc = "metadata"
	PreallocFalloc   Prealloc = "falloc"
	PreallocFull     Prealloc = "full"
)

// ParsePrealloc checks a preallocation option value.
func ParsePrealloc(s string) (Prealloc, bool) {
	switch Prealloc(s) {
	case PreallocOff, PreallocMetadata, PreallocFalloc, PreallocFull:
		return Prealloc(s), true
	}
	return "", false
}
