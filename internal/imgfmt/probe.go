// Format probing: which format a file holds when the user did not say (-f).
package imgfmt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"

	"github.com/qnbd/qnbd/qcow2"
)

// probeBytes is how much of a file probing looks at. QEMU reads up to 2048 bytes
// (BLOCK_PROBE_BUF_SIZE); the signatures below all sit well inside that.
const probeBytes = 2048

// foreign lists formats qnbd-img does not implement but recognises, so that it refuses them
// rather than treating, say, a VMDK as a raw disk and copying its metadata as guest data.
var foreign = []struct {
	name  string
	off   int
	magic []byte
}{
	{"vmdk", 0, []byte("KDMV")},
	{"vmdk", 0, []byte("# Disk DescriptorFile")},
	{"vhdx", 0, []byte("vhdxfile")},
	{"vpc", 0, []byte("conectix")},
	{"qed", 0, []byte("QED\x00")},
	{"luks", 0, []byte("LUKS\xba\xbe")},
	{"vdi", 0x40, []byte{0x7f, 0x10, 0xda, 0xbe}}, // VDI_SIGNATURE 0xbeda107f, little endian
	{"parallels", 0, []byte("WithoutFreeSpace")},
	{"parallels", 0, []byte("WithouFreSpacExt")},
	{"bochs", 0, []byte("Bochs Virtual HD Image")},
}

// UnsupportedFormatError is returned when probing recognises a format qnbd-img does not
// implement.
type UnsupportedFormatError struct{ Name string }

func (e *UnsupportedFormatError) Error() string {
	return fmt.Sprintf("image format '%s' is not supported by qnbd-img (only raw and qcow2 are); use -f raw to read the file as raw bytes", e.Name)
}

// ProbeBytes returns the format of an image whose first bytes are b (up to probeBytes of
// them): qcow2 when it starts with the qcow2 magic ("QFI\xfb"), raw otherwise. A recognised
// foreign format gives an *UnsupportedFormatError, and a qcow version 1 image is named "qcow".
func ProbeBytes(b []byte) (Format, error) {
	if len(b) >= 4 && binary.BigEndian.Uint32(b) == qcow2.Magic {
		if len(b) >= 8 && binary.BigEndian.Uint32(b[4:]) == 1 {
			return "", &UnsupportedFormatError{Name: "qcow"}
		}
		return Qcow2, nil
	}
	for _, f := range foreign {
		if len(b) >= f.off+len(f.magic) && bytes.Equal(b[f.off:f.off+len(f.magic)], f.magic) {
			return "", &UnsupportedFormatError{Name: f.name}
		}
	}
	return Raw, nil
}

// ProbeReader probes the image readable through r.
func ProbeReader(r io.ReaderAt) (Format, error) {
	buf := make([]byte, probeBytes)
	n, err := r.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return "", err
	}
	return ProbeBytes(buf[:n])
}

// Probe opens path read-only and probes it.
func Probe(path string) (Format, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return ProbeReader(f)
}
