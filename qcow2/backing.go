// The backing chain: opening qcow2 and raw backing files, depth and loop limits, layer reads.
package qcow2

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/qnbd/qnbd/internal/probe"
)

// layer is a backing file as the overlay sees it: a read-only byte range that reads as zeros
// past its end, and knows where its data is.
type layer interface {
	// readLayer fills p from off; bytes past the layer's end read as zeros.
	readLayer(p []byte, off uint64) error
	// layerSize is the layer's virtual size.
	layerSize() uint64
	// mapLayer describes [off, off+n) of the layer (Depth relative to the layer).
	mapLayer(off, n uint64) ([]Extent, error)
	// chainStatus is the block status of [off, off+n), inside layerSize, from this layer
	// down (Depth relative to the layer): Image.BlockStatus with above, MapStatus without.
	chainStatus(off, n uint64, above bool) ([]Status, error)
	// chain describes the layer and the layers below it.
	chain(depth int) []LayerInfo
	Close() error
}

// LayerInfo describes one image of a backing chain (qemu-img info --backing-chain).
type LayerInfo struct {
	Filename      string
	Format        string // "qcow2" or "raw"
	VirtualSize   uint64
	Depth         int // 0 for the image itself
	BackingFile   string
	BackingFormat string
}

// chainState tracks the files opened for one chain, to bound its depth and refuse loops.
type chainState struct {
	depth int
	seen  []string
	// name is the image's name as QEMU would print it: the caller's path for the top image,
	// each backing file's name combined with the name of the image naming it.
	name string
}

func (cs *chainState) enter(abs string) error {
	for _, p := range cs.seen {
		if p == abs {
			return fmt.Errorf("%w: backing chain loops back to %s", ErrFormat, abs)
		}
	}
	if len(cs.seen) > maxChainDepth {
		return fmt.Errorf("%w: backing chain deeper than %d images", ErrUnsupported, maxChainDepth)
	}
	cs.seen = append(cs.seen, abs)
	return nil
}

func (cs *chainState) nameOr(path string) string {
	if cs.name != "" {
		return cs.name
	}
	return path
}

// qemuCombinedName is a backing file's name as QEMU prints it (path_combine): an absolute
// name as it is, a relative one after the directory part of the name of the image naming it.
func qemuCombinedName(image, backing string) string {
	if strings.HasPrefix(backing, "/") {
		return backing
	}
	if i := strings.LastIndexByte(image, '/'); i >= 0 {
		return image[:i+1] + backing
	}
	return backing
}

// BackingOpenError is a failure to open a backing file of the chain: Path is that file's
// name as QEMU prints it (qemuCombinedName) and Err why it failed, itself a BackingOpenError when the failure lies
// further down the chain.
type BackingOpenError struct {
	Path string
	Err  error
}

func (e *BackingOpenError) Error() string {
	return fmt.Sprintf("qcow2: open backing file %s: %v", e.Path, e.Err)
}

func (e *BackingOpenError) Unwrap() error { return e.Err }

// openBacking opens img's backing file, honouring the backing format extension (probing the
// file when there is none, as QEMU does for old images).
func openBacking(img *Image, cs *chainState) (layer, error) {
	path, err := resolveBackingName(img.dir, img.hdr.BackingFile)
	if err != nil {
		return nil, err
	}
	name := qemuCombinedName(cs.nameOr(img.path), img.hdr.BackingFile)
	o := img.opts
	fo := o.File
	fo.ReadOnly = true
	fo.Role = RoleBacking
	format := img.hdr.Extensions.BackingFormat
	if format == "" {
		s, err := openHostFile(o, path, fo)
		if err != nil {
			return nil, &BackingOpenError{Path: name, Err: err}
		}
		// Probed as QEMU probes (internal/probe): a backing file in a format the engine does
		// not read is refused below rather than read as raw.
		format, err = probe.Reader(s, path)
		s.Close()
		if err != nil {
			return nil, fmt.Errorf("qcow2: probe backing file: %w", err)
		}
	}
	switch format {
	case "qcow2":
		child := &chainState{depth: cs.depth + 1, seen: cs.seen, name: name}
		if child.depth > maxChainDepth {
			return nil, fmt.Errorf("%w: backing chain deeper than %d images", ErrUnsupported, maxChainDepth)
		}
		b, err := openChain(path, OpenOptions{ReadOnly: true, File: fo, Opener: o.Opener, Logger: o.Logger, Warn: o.Warn, ReadBitmaps: o.ReadBitmaps, BitmapMemoryLimit: o.BitmapMemoryLimit}, child)
		if err != nil {
			return nil, &BackingOpenError{Path: name, Err: err}
		}
		return qcow2Layer{b}, nil
	case "raw":
		abs, _ := filepath.Abs(path)
		if err := cs.enter(abs); err != nil {
			return nil, err
		}
		s, err := openHostFile(o, path, fo)
		if err != nil {
			return nil, &BackingOpenError{Path: name, Err: err}
		}
		n, err := s.Size()
		if err != nil {
			s.Close()
			return nil, err
		}
		return &rawLayer{s: s, path: path, size: uint64(n)}, nil
	}
	return nil, fmt.Errorf("%w: backing file format %q (qnbd reads qcow2 and raw)", ErrUnsupported, format)
}

// Backing returns the backing image when it is a qcow2 image, or nil.
func (img *Image) Backing() *Image {
	if q, ok := img.backing.(qcow2Layer); ok {
		return q.img
	}
	return nil
}

// BackingChain describes the image and every layer below it.
func (img *Image) BackingChain() []LayerInfo { return qcow2Layer{img}.chain(0) }

// qcow2Layer is a qcow2 backing image.
type qcow2Layer struct{ img *Image }

func (l qcow2Layer) readLayer(p []byte, off uint64) error {
	size := l.img.Size()
	n := uint64(len(p))
	if off >= size {
		clear(p)
		return nil
	}
	if off+n > size {
		clear(p[size-off:])
		p = p[:size-off]
	}
	_, err := l.img.ReadAt(p, int64(off))
	return err
}

func (l qcow2Layer) layerSize() uint64 { return l.img.Size() }

func (l qcow2Layer) mapLayer(off, n uint64) ([]Extent, error) {
	size := l.img.Size()
	if off >= size {
		return []Extent{{Start: off, Length: n, Kind: kindZero, Depth: 0}}, nil
	}
	var tail []Extent
	if off+n > size {
		tail = []Extent{{Start: size, Length: off + n - size, Kind: kindZero}}
		n = size - off
	}
	ext, err := l.img.Map(GuestOffset(off), n)
	return append(ext, tail...), err
}

func (l qcow2Layer) chainStatus(off, n uint64, above bool) ([]Status, error) {
	return l.img.chainStatus(off, n, above)
}

func (l qcow2Layer) chain(depth int) []LayerInfo {
	img := l.img
	h := img.Header()
	out := []LayerInfo{{Filename: img.path, Format: "qcow2", VirtualSize: img.Size(), Depth: depth,
		BackingFile: h.BackingFile, BackingFormat: h.Extensions.BackingFormat}}
	if img.backing != nil {
		out = append(out, img.backing.chain(depth+1)...)
	}
	return out
}

func (l qcow2Layer) Close() error { return l.img.Close() }

// rawLayer is a raw backing file.
type rawLayer struct {
	s    Storage
	path string
	size uint64
}

func (l *rawLayer) readLayer(p []byte, off uint64) error {
	if off >= l.size {
		clear(p)
		return nil
	}
	n := min(uint64(len(p)), l.size-off)
	if err := readAtFull(l.s, p[:n], HostOffset(off)); err != nil {
		return err
	}
	clear(p[n:])
	return nil
}

// layerSize is the file's length in whole sectors, as QEMU's block layer sees it
// (bdrv_getlength); the tail of a partial last sector reads as zeros.
func (l *rawLayer) layerSize() uint64 { return alignUp(l.size, 512) }

// chainStatus is QEMU's file driver's block status (raw_co_block_status through the raw
// format driver): every run is allocated and located at its own offset of the file; holes
// (SEEK_DATA/SEEK_HOLE) read as zeros, and so does everything after the last data, up to
// the end of the last sector. A store that cannot tell its holes is all data.
func (l *rawLayer) chainStatus(off, n uint64, _ bool) ([]Status, error) {
	var out statusList
	add := func(start, end uint64, zero bool) {
		out.add(Status{Start: start, Length: end - start, Data: !zero, Zero: zero, Allocated: true,
			HasOffset: true, Offset: HostOffset(start), File: l.path})
	}
	end := off + n
	fa, canSeek := l.s.(allocationFinder)
	for pos := off; pos < end; {
		if pos >= l.size {
			add(pos, end, true)
			break
		}
		if !canSeek {
			next := min(l.size, end)
			add(pos, next, false)
			pos = next
			continue
		}
		data, hole, err := fa.FindAllocation(int64(pos))
		switch {
		case errors.Is(err, errNoMoreData):
			add(pos, end, true)
			pos = end
		case err != nil:
			// No information: pretend there are no holes (up to the end of the request).
			add(pos, end, false)
			pos = end
		case uint64(data) == pos && uint64(hole) > pos:
			next := min(uint64(hole), end)
			add(pos, next, false)
			pos = next
		case uint64(hole) == pos && uint64(data) > pos:
			next := min(uint64(data), end)
			add(pos, next, true)
			pos = next
		default:
			add(pos, end, false)
			pos = end
		}
	}
	return out, nil
}

// mapLayer reports the raw file's data and holes as QEMU's file driver sees them
// (chainStatus): data at its own offset of the file, holes and everything past the end as
// zeros.
func (l *rawLayer) mapLayer(off, n uint64) ([]Extent, error) {
	var out []Extent
	end := off + n
	if stop := min(end, l.layerSize()); off < stop {
		st, err := l.chainStatus(off, stop-off, true)
		if err != nil {
			return nil, err
		}
		for _, s := range st {
			e := Extent{Start: s.Start, Length: s.Length, Kind: kindZero}
			if s.Data {
				e.Kind, e.Host, e.HostFile = kindData, s.Offset, l.path
			}
			out = append(out, e)
		}
	}
	if start := max(off, l.layerSize()); start < end {
		if k := len(out) - 1; k >= 0 && out[k].Kind == kindZero {
			out[k].Length += end - start
		} else {
			out = append(out, Extent{Start: start, Length: end - start, Kind: kindZero})
		}
	}
	return out, nil
}

func (l *rawLayer) chain(depth int) []LayerInfo {
	return []LayerInfo{{Filename: l.path, Format: "raw", VirtualSize: l.size, Depth: depth}}
}

func (l *rawLayer) Close() error { return l.s.Close() }
