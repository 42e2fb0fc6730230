// What qemu-img info reports about one image (no backing files opened).
package imgfmt

import (
	"strings"

	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/qcow2"
)

// ImageInfo is one image's entry in qemu-img info, format-neutral.
type ImageInfo struct {
	// qcow2Header is the header read, for WarnIgnoredBitmaps (nil for other formats).
	qcow2Header *qcow2.Header

	Filename    string
	Format      Format
	VirtualSize uint64
	// ActualSize is the host space the image file occupies; HasActualSize is false when it
	// could not be determined.
	ActualSize    int64
	HasActualSize bool
	// ClusterSize is 0 for formats without clusters (raw).
	ClusterSize uint64
	Dirty       bool
	// BackingFile is the backing file name as stored in the image, FullBackingFile the same
	// resolved against the image's directory, BackingFormat the stored backing format.
	BackingFile, FullBackingFile, BackingFormat string
	Snapshots                                   []Snapshot
	// Qcow2 holds the qcow2-specific fields; nil for raw.
	Qcow2 *Qcow2Info
}

// Qcow2Info is the "format-specific" part of a qcow2 image's info.
type Qcow2Info struct {
	Compat          string // "0.10" or "1.1"
	CompressionType string // "zlib" or "zstd"
	// BitmapsIgnored: a bitmaps extension QEMU ignores (the autoclear bit is off), about which
	// it warns at every open (any version).
	BitmapsIgnored bool
	// The remaining fields exist only for version 3 images (Compat "1.1").
	LazyRefcounts, Corrupt, ExtendedL2 bool
	RefcountBits                       uint64
	DataFile                           string // "" when none
	// ExternalData is the external data file incompatible bit: QEMU shows DataFileRaw
	// whenever it is set, with or without a DataFile name.
	ExternalData bool
	DataFileRaw  bool
	Bitmaps      []Bitmap
}

// V3 reports whether the v3-only fields are meaningful.
func (q *Qcow2Info) V3() bool { return q.Compat != "0.10" }

// QueryInfo reads the information qemu-img info shows for the image at path, opened as format
// (empty probes). Backing files are not opened. The image is locked as qemu-img info locks it
// (metadata only: a qcow2 image refuses to share write and resize, a raw one takes nothing);
// forceShare is -U.
func QueryInfo(path string, format Format, forceShare bool) (*ImageInfo, error) {
	if err := checkRegularOrDevice(path); err != nil {
		return nil, err
	}
	if format == "" {
		f, err := Probe(path)
		if err != nil {
			return nil, err
		}
		format = f
	}
	info := &ImageInfo{Filename: path, Format: format}
	if n, err := AllocatedSize(path); err == nil {
		info.ActualSize, info.HasActualSize = n, true
	}
	switch format {
	case Raw:
		d, err := openRaw(path, OpenOptions{ReadOnly: true, Lock: &infoLock, ForceShare: forceShare}, false)
		if err != nil {
			return nil, err
		}
		info.VirtualSize = d.Size()
		return info, d.Close()
	case Qcow2:
		if err := checkQcow2Magic(path); err != nil {
			return nil, err
		}
		return info, queryQcow2(path, info, forceShare)
	}
	return nil, &UnknownFormatError{Name: string(format)}
}

// infoLock is what qemu-img info asks of an image: no permission (it reads metadata only),
// sharing everything.
var infoLock = imagelock.Request{Shared: imagelock.All}

func queryQcow2(path string, info *ImageInfo, forceShare bool) error {
	s, err := qcow2.OpenFile(path, qcow2.FileOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	req := infoLock
	req.ForceShare = forceShare
	if err := lockFile(s.File(), req, imagelock.Qcow2Image); err != nil {
		return err
	}
	defer s.Close()
	h, err := qcow2.ReadHeader(s)
	if err != nil {
		return err
	}
	info.qcow2Header = h
	info.VirtualSize = h.Size
	info.ClusterSize = h.ClusterSize()
	info.Dirty = h.Dirty()
	if h.BackingFile != "" {
		info.BackingFile = h.BackingFile
		info.FullBackingFile = FullBackingFilename(path, h.BackingFile)
		info.BackingFormat = h.Extensions.BackingFormat
	}
	q := &Qcow2Info{Compat: h.CompatLevel(), CompressionType: "zlib"}
	if h.CompressionType == qcow2.CompressionZstd {
		q.CompressionType = "zstd"
	}
	if q.V3() {
		q.LazyRefcounts = h.LazyRefcounts()
		q.Corrupt = h.Corrupt()
		q.ExtendedL2 = h.Incompatible&qcow2.IncompatExtendedL2 != 0
		q.DataFile = h.Extensions.DataFile
		q.ExternalData = h.HasDataFile()
		q.DataFileRaw = h.DataFileRaw()
	}
	q.RefcountBits = h.Geometry().RefcountBits()
	q.BitmapsIgnored = h.BitmapsIgnored()
	if err := qcow2.ValidateBitmaps(s, h); err != nil {
		return err // what QEMU's open refuses, in its words
	}
	if q.V3() {
		if q.Bitmaps, err = readBitmaps(s, h); err != nil {
			return err
		}
	}
	info.Qcow2 = q
	info.Snapshots, err = engineSnapshots(s, h)
	return err
}

// FullBackingFilename resolves a backing file name stored in image the way QEMU does
// (path_combine): an absolute name or one with a protocol prefix stays as it is, a relative
// one is taken relative to the directory part of the image's name, textually.
func FullBackingFilename(image, backing string) string {
	if strings.HasPrefix(backing, "/") || hasProtocol(backing) {
		return backing
	}
	i := strings.LastIndexByte(image, '/')
	if i < 0 {
		return backing
	}
	return image[:i+1] + backing
}

// hasProtocol reports a "proto:" prefix before any slash, as QEMU's path_has_protocol.
func hasProtocol(name string) bool {
	i := strings.IndexAny(name, ":/")
	return i >= 0 && name[i] == ':'
}
