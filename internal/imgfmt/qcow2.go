// qcow2Disk: the qcow2 engine's Image as a Disk, with QEMU's block-status refinements.
package imgfmt

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/qnbd/qnbd/qcow2"
)

// qcow2Disk adapts an open engine image. Map post-processes the engine's extents the way
// QEMU's block layer does before qemu-img map prints them (see refineExtents).
type qcow2Disk struct {
	img  engineImage
	name string
	// layers is the backing chain, top first, with each layer's virtual size.
	layers []Layer
	// names maps the engine's host file paths (made absolute) to the names QEMU prints for
	// them: the image as given, backing files combined with the name of the image above
	// them, the external data file as stored in the header.
	names map[string]string
	// recurse is QEMU's metadata-preallocation heuristic: when set, data runs of this image
	// are checked against the host file for holes and reported as known zeros there.
	recurse bool

	mu    sync.Mutex          // guards hosts
	hosts map[string]*os.File // host files opened for SEEK_HOLE, by name
}

func openQcow2(path string, o OpenOptions) (*qcow2Disk, error) {
	img, err := engineOpen(path, o)
	if err != nil {
		return nil, err
	}
	d := &qcow2Disk{img: img, name: path, hosts: map[string]*os.File{}, names: map[string]string{}}
	d.layers = engineChain(img)
	if len(d.layers) == 0 {
		d.layers = []Layer{{Filename: path, Format: Qcow2, Size: img.Size()}}
	}
	h := img.Header()
	d.nameFiles(path, &h)
	if rec, err := detectMetadataPrealloc(path, &h); err == nil {
		d.recurse = rec
	}
	return d, nil
}

// nameFiles fills d.names.
func (d *qcow2Disk) nameFiles(path string, h *qcow2.Header) {
	add := func(engineName, qemuName string) {
		if abs, err := filepath.Abs(engineName); err == nil {
			d.names[abs] = qemuName
		}
	}
	add(path, path)
	if h.Extensions.DataFile != "" {
		add(dataFilePath(path, h.Extensions.DataFile), h.Extensions.DataFile)
	}
	name := path
	for i := 0; i+1 < len(d.layers); i++ {
		name = FullBackingFilename(name, d.layers[i].BackingFile)
		add(d.layers[i+1].Filename, name)
		d.layers[i+1].Filename = name
	}
	d.layers[0].Filename = path
}

// qemuName is the name QEMU prints for a host file the engine names.
func (d *qcow2Disk) qemuName(engineName string) string {
	if abs, err := filepath.Abs(engineName); err == nil {
		if n, ok := d.names[abs]; ok {
			return n
		}
	}
	return engineName
}

func (d *qcow2Disk) Format() Format                          { return Qcow2 }
func (d *qcow2Disk) Filename() string                        { return d.name }
func (d *qcow2Disk) Size() uint64                            { return d.img.Size() }
func (d *qcow2Disk) ReadAt(p []byte, off int64) (int, error) { return d.img.ReadAt(p, off) }
func (d *qcow2Disk) WriteAt(p []byte, off int64) (int, error) {
	return d.img.WriteAt(p, off)
}
func (d *qcow2Disk) WriteZeroes(off, n uint64) error { return d.img.WriteZeroes(off, n, true) }
func (d *qcow2Disk) Flush() error                    { return d.img.Flush() }

func (d *qcow2Disk) Resize(size uint64, prealloc Prealloc) error {
	if prealloc != PreallocOff && prealloc != "" {
		return fmt.Errorf("preallocation=%s is not supported when resizing qcow2 images: %w", prealloc, unix.ENOTSUP)
	}
	if err := d.img.Resize(size); err != nil {
		return err
	}
	if len(d.layers) > 0 {
		d.layers[0].Size = size
	}
	return nil
}

func (d *qcow2Disk) Close() error {
	err := d.img.Close()
	d.mu.Lock()
	for _, f := range d.hosts {
		f.Close()
	}
	d.hosts = nil
	d.mu.Unlock()
	return err
}

// Map returns the engine's block status, refined as QEMU refines it.
func (d *qcow2Disk) Map(off, n uint64) ([]Extent, error) {
	if off > d.Size() || n > d.Size()-off {
		return nil, fmt.Errorf("map request [%d, +%d) beyond the end of the disk: %w", off, n, unix.EINVAL)
	}
	ext, err := engineMap(d.img, off, n)
	if err != nil {
		return nil, err
	}
	ext = refineExtents(ext, d.layers, d.recurse, d.hostHoles)
	for i := range ext {
		if ext[i].File != "" {
			ext[i].File = d.qemuName(ext[i].File)
		}
	}
	return ext, nil
}

// hostHoles splits [off, off+n) of host file name into data and hole runs.
func (d *qcow2Disk) hostHoles(name string, off, n uint64, emit func(start, end uint64, hole bool)) {
	d.mu.Lock()
	f, ok := d.hosts[name]
	if !ok && d.hosts != nil {
		var err error
		if f, err = os.Open(name); err != nil {
			f = nil
		}
		d.hosts[name] = f
	}
	d.mu.Unlock()
	if f == nil {
		emit(off, off+n, false)
		return
	}
	st, err := f.Stat()
	if err != nil {
		emit(off, off+n, false)
		return
	}
	seekMap(f, st.Size(), off, off+n, emit)
}

// refineExtents applies what QEMU's block layer adds to a format driver's block status:
//
//   - A range no layer allocates that lies past the end of a shorter backing file reads as
//     zeros without consulting that file: QEMU reports it as unallocated ("present": false) at
//     the depth of the layer above the short one. The engine reports it as zeros of the short
//     layer.
//   - A hole in a raw backing file is a zero run at a known offset of that file.
//   - With metadata preallocation detected (recurse), a data run of the top image is looked up
//     in its host file, and the parts that are holes there are reported as known zeros.
func refineExtents(in []Extent, layers []Layer, recurse bool, holes func(name string, off, n uint64, emit func(start, end uint64, hole bool))) []Extent {
	var out []Extent
	var split []Extent
	for _, e := range in {
		// The engine may merge zeros inside a short backing layer with the zeros past its end:
		// cut them apart first.
		if e.Kind == KindZero && e.Depth >= 1 && e.Depth < len(layers) {
			if size := layers[e.Depth].Size; e.Start < size && e.End() > size {
				head := e
				head.Length = size - e.Start
				e.Length -= head.Length
				e.Start = size
				split = append(split, head)
			}
		}
		split = append(split, e)
	}
	for _, e := range split {
		switch {
		case e.Kind == KindZero && e.Depth >= 1 && e.Depth < len(layers) && e.Start >= layers[e.Depth].Size:
			e.Kind, e.Depth = KindUnallocated, e.Depth-1
			out = append(out, e)
		case e.Kind == KindZero && e.Depth >= 1 && e.Depth < len(layers) && layers[e.Depth].Format == Raw:
			e.HasOffset, e.Offset, e.File = true, e.Start, layers[e.Depth].Filename
			out = append(out, e)
		case recurse && e.Kind == KindData && e.Depth == 0 && e.HasOffset && !e.KnownZero && e.File != "":
			holes(e.File, e.Offset, e.Length, func(start, end uint64, hole bool) {
				part := e
				part.Start = e.Start + (start - e.Offset)
				part.Offset = start
				part.Length = end - start
				part.KnownZero = hole
				out = append(out, part)
			})
		default:
			out = append(out, e)
		}
	}
	return out
}

// dataFilePath resolves an external data file name against the image's directory.
func dataFilePath(image, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(filepath.Dir(image), name)
}

// ClusterSize is the image's cluster size in bytes.
func (d *qcow2Disk) ClusterSize() uint64 {
	h := d.img.Header()
	return h.ClusterSize()
}
