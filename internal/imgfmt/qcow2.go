// qcow2Disk: the qcow2 engine's Image as a Disk (block status from the engine's MapStatus).
package imgfmt

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/qnbd/qnbd/qcow2"
)

// qcow2Disk adapts an open engine image. Map is the engine's MapStatus (QEMU's block status,
// walked as qemu-img map walks the chain), with file names as QEMU prints them.
type qcow2Disk struct {
	img  engineImage
	name string
	// layers is the backing chain, top first, with each layer's virtual size.
	layers []Layer
	// names maps the engine's host file paths (made absolute) to the names QEMU prints for
	// them: the image as given, backing files combined with the name of the image above
	// them, the external data file as stored in the header.
	names map[string]string
}

func openQcow2(path string, o OpenOptions) (*qcow2Disk, error) {
	img, err := engineOpen(path, o)
	if err != nil {
		return nil, err
	}
	d := &qcow2Disk{img: img, name: path, names: map[string]string{}}
	d.layers = engineChain(img)
	if len(d.layers) == 0 {
		d.layers = []Layer{{Filename: path, Format: Qcow2, Size: img.Size()}}
	}
	h := img.Header()
	d.nameFiles(path, &h)
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
func (d *qcow2Disk) WriteZeroes(off, n uint64) error {
	return d.img.Zero(qcow2.GuestOffset(off), n, qcow2.ZeroMayUnmap)
}
func (d *qcow2Disk) Flush() error { return d.img.Flush() }

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

func (d *qcow2Disk) Close() error { return d.img.Close() }

// Map returns the engine's block status as qemu-img map finds it.
func (d *qcow2Disk) Map(off, n uint64) ([]Extent, error) {
	if off > d.Size() || n > d.Size()-off {
		return nil, fmt.Errorf("map request [%d, +%d) beyond the end of the disk: %w", off, n, unix.EINVAL)
	}
	ext, err := engineMap(d.img, off, n)
	if err != nil {
		return nil, err
	}
	for i := range ext {
		if ext[i].File != "" {
			ext[i].File = d.qemuName(ext[i].File)
		}
	}
	return ext, nil
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
