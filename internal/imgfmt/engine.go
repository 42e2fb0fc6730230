// The one file that names the qcow2 engine's runtime API (its contract: qcow2/doc.go): open, map, chain,
// snapshots, create and check, converted to this package's format-neutral types.
package imgfmt

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/internal/qcow2lock"
	"github.com/qnbd/qnbd/qcow2"
)

// EngineReady reports whether qcow2 images can be opened, created and checked.
const EngineReady = true

// engineImage is what the adapter uses of an open qcow2 image (*qcow2.Image).
type engineImage interface {
	Header() qcow2.Header
	Size() uint64
	ReadAt(p []byte, off int64) (int, error)
	WriteAt(p []byte, off int64) (int, error)
	Zero(off qcow2.GuestOffset, n uint64, f qcow2.ZeroFlags) error
	Flush() error
	Close() error
	Resize(newSize uint64) error
}

// engineOpen opens a qcow2 image. Bitmaps load without the engine's memory cap, which is the
// server's: qemu-img has none, and a 2 TiB disk's 512-byte-granularity bitmap takes 512 MiB.
func engineOpen(path string, o OpenOptions) (engineImage, error) {
	img, err := qcow2.Open(path, qcow2.OpenOptions{ReadOnly: o.ReadOnly, NoBacking: o.NoBacking, Warn: o.Warn,
		ReadBitmaps: o.ReadBitmaps, BitmapMemoryLimit: -1, File: qcow2.FileOptions{NoSync: o.NoFlush}, Opener: newChainNamer(path, qcow2lock.Opener(lockRequest(o), nil)).opener})
	if err != nil {
		return nil, err
	}
	return img, nil
}

// engineMap returns the engine's block status for [off, off+n) as qemu-img map walks the
// backing chain (Image.MapStatus), in this package's terms. File names are the engine's (the
// adapter renames them).
func engineMap(img engineImage, off, n uint64) ([]Extent, error) {
	st, err := img.(*qcow2.Image).MapStatus(qcow2.GuestOffset(off), n)
	if err != nil {
		return nil, err
	}
	out := make([]Extent, 0, len(st))
	for _, s := range st {
		x := Extent{Start: s.Start, Length: s.Length, Depth: s.Depth}
		switch {
		case s.Data:
			x.Kind, x.KnownZero, x.Compressed = KindData, s.Zero, s.Compressed
		case s.Allocated:
			x.Kind = KindZero
		default:
			x.Kind = KindUnallocated
		}
		if s.HasOffset {
			x.HasOffset, x.Offset, x.File = true, uint64(s.Offset), s.File
		}
		out = append(out, x)
	}
	return out, nil
}

// engineChain lists the image and its backing files, top first.
func engineChain(img engineImage) []Layer {
	var out []Layer
	for _, l := range img.(*qcow2.Image).BackingChain() {
		out = append(out, Layer{Filename: l.Filename, Format: Format(l.Format), Size: l.VirtualSize,
			BackingFile: l.BackingFile})
	}
	return out
}

// engineSnapshots reads the snapshot table of the image whose header is h, as QEMU reads it
// when it opens the image (what qemu-img info lists).
func engineSnapshots(s qcow2.Storage, h *qcow2.Header) ([]Snapshot, error) {
	snaps, err := qcow2.LoadSnapshots(s, h)
	if err != nil {
		return nil, err
	}
	out := make([]Snapshot, len(snaps))
	for i, sn := range snaps {
		out[i] = Snapshot{ID: sn.ID, Name: sn.Name, VMStateSize: sn.VMStateSize, Date: sn.Date,
			VMClock: sn.VMClock, ICount: uint64(sn.ICount), HasICount: sn.ICount != -1}
	}
	return out, nil
}

// engineCreate creates a qcow2 image.
func engineCreate(path string, o Qcow2CreateOptions) error {
	return qcow2.Create(path, qcow2.CreateOptions{
		Size: o.Size, ClusterSize: o.ClusterSize, RefcountBits: o.RefcountBits, Compat: o.Compat,
		ExtendedL2: o.ExtendedL2, LazyRefcounts: o.LazyRefcounts, CompressionType: o.CompressionType,
		BackingFile: o.BackingFile, BackingFormat: o.BackingFormat, DataFile: o.DataFile,
		DataFileRaw: o.DataFileRaw, Preallocation: string(o.Preallocation),
	})
}

// engineCheck checks (and with mode, repairs) a qcow2 image. A check that could not complete
// returns the partial result with an error that matches EIO, as QEMU reports it.
func engineCheck(path string, mode RepairMode, forceShare bool, warn func(warning, hint string)) (*CheckResult, error) {
	var m qcow2.RepairMode
	switch mode {
	case RepairLeaks:
		m = qcow2.RepairLeaks
	case RepairAll:
		m = qcow2.RepairAll
	}
	if err := backingChainOpens(path); err != nil {
		return nil, err
	}
	r, err := lockedCheck(path, m, forceShare, warn)
	var out *CheckResult
	if r != nil {
		out = &CheckResult{
			Corruptions: r.Corruptions, Leaks: r.Leaks, CheckErrors: r.CheckErrors,
			CorruptionsFixed: r.CorruptionsFixed, LeaksFixed: r.LeaksFixed,
			ImageEndOffset: r.ImageEndOffset, TotalClusters: r.TotalClusters,
			AllocatedClusters: r.AllocatedClusters, FragmentedClusters: r.FragmentedClusters,
			CompressedClusters: r.CompressedClusters, Messages: stderrMessages(r.Messages),
			CloseMessages: r.CloseMessages,
		}
	}
	if err != nil && out != nil && !isOpenFailure(err) {
		var en syscall.Errno
		if !errors.As(err, &en) {
			err = &checkError{err: err}
		}
	}
	return out, err
}

// backingChainOpens returns the failure to open a backing file of the image at path, if one
// fails: qemu-img check opens the whole chain first and stops there ("Could not open
// backing file: ..."). Any other open failure is left to the check, which reports it its own
// way.
func backingChainOpens(path string) error {
	img, err := qcow2.Open(path, qcow2.OpenOptions{ReadOnly: true, BitmapMemoryLimit: -1})
	if err == nil {
		return img.Close()
	}
	var be *qcow2.BackingOpenError
	if errors.As(err, &be) {
		return err
	}
	return nil
}

// lockedCheck is qcow2.Check with the image file locked as qemu-img check locks it:
// consistent read (plus write and resize to repair), not sharing write and resize. The check
// reads and repairs the image file only, so only it is locked.
func lockedCheck(path string, m qcow2.RepairMode, forceShare bool, warn func(warning, hint string)) (*qcow2.CheckResult, error) {
	s, err := qcow2.OpenFile(path, qcow2.FileOptions{ReadOnly: m == qcow2.RepairNone})
	if err != nil {
		return nil, err
	}
	req := imagelock.Request{Perm: imagelock.ConsistentRead, Shared: imagelock.All, ForceShare: forceShare}
	if m != qcow2.RepairNone {
		req.Perm |= imagelock.Write | imagelock.Resize
	}
	if err := lockFile(s.File(), req, imagelock.Qcow2Image); err != nil {
		return nil, err
	}
	if h, herr := qcow2.ReadHeader(s); herr == nil {
		qcow2.WarnIgnoredBitmaps(h, warn) // qemu-img check opens the image first
	}
	res, err := qcow2.CheckStorageIn(s, filepath.Dir(path), m)
	if cerr := s.Close(); cerr != nil && err == nil && m != qcow2.RepairNone {
		err = fmt.Errorf("qcow2: close %s: %w", path, cerr)
	}
	return res, err
}

// isOpenFailure reports errors that mean the image could not be opened at all.
func isOpenFailure(err error) bool {
	return errors.Is(err, qcow2.ErrFormat) || errors.Is(err, qcow2.ErrUnsupported)
}

// checkError is a check that could not complete; it matches EIO.
type checkError struct{ err error }

func (e *checkError) Error() string { return e.err.Error() }
func (e *checkError) Unwrap() []error {
	return []error{e.err, syscall.EIO}
}

// stderrMessages drops from the engine's check messages the repair summary that qemu-img
// prints on stdout ("The following inconsistencies were found and repaired:", the two counts,
// "Double checking the fixed image now..."): the command line prints it itself, in its place.
func stderrMessages(msgs []string) []string {
	out := make([]string, 0, len(msgs))
	for i := 0; i < len(msgs); i++ {
		if msgs[i] == "The following inconsistencies were found and repaired:" && i+3 < len(msgs) &&
			strings.HasSuffix(msgs[i+1], " leaked clusters") && strings.HasSuffix(msgs[i+2], " corruptions") &&
			msgs[i+3] == "Double checking the fixed image now..." {
			i += 3
			continue
		}
		out = append(out, msgs[i])
	}
	return out
}

// WarnIgnoredBitmaps gives warn the warning QEMU's open prints for the qcow2 image info
// describes when its bitmaps cannot be trusted (qemu-img info reads the header, it does not
// open the engine).
func WarnIgnoredBitmaps(info *ImageInfo, warn func(warning, hint string)) {
	if info.qcow2Header != nil {
		qcow2.WarnIgnoredBitmaps(info.qcow2Header, warn)
	}
}
