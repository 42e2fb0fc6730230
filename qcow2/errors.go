// Error classes of the engine: few sentinels, and a FormatError that names the field.
package qcow2

import (
	"errors"
	"fmt"
	"syscall"
)

// Callers branch on the class with errors.Is; messages stay specific.
var (
	// ErrFormat: the file is not a valid qcow2 image (bad magic, a field outside the spec's or
	// QEMU's limits). Returned by Open; the image is untouched.
	ErrFormat = errors.New("qcow2: invalid image")
	// ErrUnsupported: something valid that cannot be done here. Either the image uses a
	// feature qnbd does not implement (an unknown incompatible bit, encryption; Open fails),
	// or the host file cannot do an optional Storage operation (punch hole, zero range,
	// SEEK_DATA: docs/hostfile.md), which the engine answers with a fallback (writing zeros,
	// keeping clusters) and which a discard ignores, as QEMU ignores ENOTSUP there. (The
	// storage half used to be a separate ErrNotSupported.)
	ErrUnsupported = errors.New("qcow2: unsupported feature")
	// ErrCorrupt: metadata found inconsistent at run time (an L2 entry pointing into the
	// header, an unaligned table offset). The image is marked corrupt (incompatible bit 1) and
	// the request fails; other requests keep being served read-only.
	ErrCorrupt = errors.New("qcow2: image is corrupt")
	// ErrReadOnly: a write to an image opened read-only.
	ErrReadOnly = errors.New("qcow2: image is read-only")
	// ErrNoSpace: the host file cannot grow (ENOSPC, EDQUOT, EFBIG) or a table would exceed
	// its limit. It matches syscall.ENOSPC with errors.Is.
	ErrNoSpace = &classError{msg: "qcow2: no space left for the image", errno: syscall.ENOSPC}
	// ErrClosed: an operation on a closed image.
	ErrClosed = errors.New("qcow2: image is closed")
	// ErrOutOfRange: a guest request beyond the virtual size. It matches syscall.EINVAL.
	ErrOutOfRange = &classError{msg: "qcow2: request beyond the end of the image", errno: syscall.EINVAL}
	// ErrSlowZero: Zero with ZeroNoFallback would have to write zero bytes (QEMU's ENOTSUP
	// for BDRV_REQ_NO_FALLBACK). It matches syscall.ENOTSUP.
	ErrSlowZero = &classError{msg: "qcow2: zeroing this range would write data", errno: syscall.ENOTSUP}
)

// Sentinels of one operation: a check, a snapshot lookup, a compressed read, the storage.
// errNeedRebuild is returned by a RepairLeaks check of an image whose refcounts can only be
// repaired by rebuilding the refcount structures (RepairAll); qemu-img says "ERROR need to
// rebuild refcount structures" and exits with 1.
var errNeedRebuild = errors.New("qcow2: need to rebuild refcount structures (repair with RepairAll)")

// ErrSnapshotNotFound is returned by findSnapshot when no snapshot matches.
var ErrSnapshotNotFound = errors.New("qcow2: snapshot not found")

// ErrCompressedData is returned when a compressed cluster does not decode to exactly one
// cluster. QEMU fails such a read with EIO without marking the image corrupt, and so does
// qnbd: the error matches syscall.EIO, not ErrCorrupt.
var ErrCompressedData = &classError{msg: "qcow2: compressed cluster data is invalid", errno: syscall.EIO}

// errNoMoreData is FindAllocation's answer for a hole that runs to the end of the store.
var errNoMoreData = errors.New("qcow2: no data at or after this offset")

// Internal signals between the engine's own layers; they never reach a caller.

// errNeedFallback is the driver's ENOTSUP: this piece must be written as zero bytes.
var errNeedFallback = errors.New("qcow2: zeroing needs written zeros")

// errIncompressible is returned by compress when the compressed form would not be smaller
// than the cluster; the writer then stores the cluster uncompressed, as QEMU does.
var errIncompressible = errors.New("qcow2: cluster does not compress")

// errCacheOption marks an invalid combination or value of the cache options.
var errCacheOption = errors.New("qcow2: invalid cache option")

// errRefblockUnaligned is what reading a refcount through a misaligned reftable entry gives.
// Its text is QEMU's strerror(EIO), which check messages print.
var errRefblockUnaligned = &chkErrno{"Input/output error", syscall.EIO}

// classError is a sentinel that also matches an errno, so that layers that speak errnos (the
// NBD server) can classify engine errors without importing this package.
type classError struct {
	msg   string
	errno syscall.Errno
}

func (e *classError) Error() string { return e.msg }

// Is reports whether target is the errno this class stands for.
func (e *classError) Is(target error) bool { return target == e.errno }

// FormatError describes a header or metadata field whose value is outside the spec's limits.
// It matches ErrFormat (or Class, when set) with errors.Is.
type FormatError struct {
	// Off is the byte offset in the image file where the field lives, or -1 if not applicable.
	Off int64
	// Field names the field as the spec does ("cluster_bits", "l1_size").
	Field string
	// Val is the value found.
	Val any
	// Msg says what is wrong with it, including the limit ("must be at most 21").
	Msg string
	// Class is the sentinel this error belongs to; ErrFormat when nil.
	Class error
}

func (e *FormatError) Error() string {
	if e.Off >= 0 {
		return fmt.Sprintf("qcow2: %s = %v at byte %#x: %s", e.Field, e.Val, e.Off, e.Msg)
	}
	return fmt.Sprintf("qcow2: %s = %v: %s", e.Field, e.Val, e.Msg)
}

// Unwrap returns the error's class.
func (e *FormatError) Unwrap() error {
	if e.Class != nil {
		return e.Class
	}
	return ErrFormat
}

func formatErr(off int64, field string, val any, format string, args ...any) error {
	return &FormatError{Off: off, Field: field, Val: val, Msg: fmt.Sprintf(format, args...)}
}

// corruptError marks err as corruption: errors.Is(err, ErrCorrupt) holds, and the message
// keeps the specific cause.
type corruptError struct{ msg string }

func (e *corruptError) Error() string   { return "qcow2: corrupt image: " + e.msg }
func (e *corruptError) Unwrap() error   { return ErrCorrupt }
func (e *corruptError) Is(t error) bool { return t == syscall.EIO }

// corruptf returns an error marked as corruption.
func corruptf(format string, args ...any) error {
	return &corruptError{msg: fmt.Sprintf(format, args...)}
}
