// Format probing: which format a file holds when the user did not say (-f). The probing
// itself is internal/probe's, shared with qnbd and the engine; this file maps its answer onto
// the formats qnbd-img implements.
package imgfmt

import (
	"fmt"
	"io"

	"github.com/qnbd/qnbd/internal/probe"
)

// probeBytes is how much of a file probing looks at (QEMU's BLOCK_PROBE_BUF_SIZE).
const probeBytes = probe.BufSize

// UnsupportedFormatError is returned when probing recognises a format qnbd-img does not
// implement.
type UnsupportedFormatError struct{ Name string }

func (e *UnsupportedFormatError) Error() string {
	return fmt.Sprintf("image format '%s' is not supported by qnbd-img (only raw and qcow2 are); use -f raw to read the file as raw bytes", e.Name)
}

// formatOf maps a probed format name onto a Format qnbd-img implements.
func formatOf(name string) (Format, error) {
	switch name {
	case probe.Raw:
		return Raw, nil
	case "qcow2":
		return Qcow2, nil
	}
	return "", &UnsupportedFormatError{Name: name}
}

// ProbeBytes returns the format of an image whose first bytes are b (up to probeBytes of
// them, zeros assumed after), without a file name: raw or qcow2, or an *UnsupportedFormatError
// naming any other format QEMU would probe.
func ProbeBytes(b []byte) (Format, error) {
	head := make([]byte, probeBytes)
	copy(head, b)
	return formatOf(probe.Format(head, ""))
}

// ProbeReader probes the image readable through r, whose file name is name (dmg images are
// recognised by name alone).
func ProbeReader(r io.ReaderAt, name string) (Format, error) {
	f, err := probe.Reader(r, name)
	if err != nil {
		return "", err
	}
	return formatOf(f)
}

// Probe probes the image at path.
func Probe(path string) (Format, error) {
	f, err := probe.File(path)
	if err != nil {
		return "", err
	}
	return formatOf(f)
}
