// Probing a buffer or a file for its format.
package probe

import (
	"errors"
	"io"
	"os"
)

// Raw is the format every file can be read as; it wins only when no other format matches.
const Raw = "raw"

// BufSize is how many bytes of a file probing looks at (QEMU's BLOCK_PROBE_BUF_SIZE); past
// the end of a shorter file the buffer reads as zeros.
const BufSize = 2048

// Format returns the name of the format QEMU would probe head (a file's first bytes) as.
// filename only matters to dmg, which probes by name; pass "" to leave it out.
func Format(head []byte, filename string) string {
	best, score := Raw, 0
	for _, c := range checks {
		if s := c.score(head, filename); s > score {
			best, score = c.name, s
		}
	}
	return best
}

// Head reads the first BufSize bytes readable through r, zeros past the end.
func Head(r io.ReaderAt) ([]byte, error) {
	b := make([]byte, BufSize)
	n, err := r.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	clear(b[n:])
	return b, nil
}

// File probes the file at path (its name takes part, for dmg). An empty file is raw.
func File(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return Reader(f, path)
}

// Reader probes the image readable through r; name is its file name (for dmg). An image
// whose first byte cannot be read because it is empty is raw, as in QEMU.
func Reader(r io.ReaderAt, name string) (string, error) {
	var one [1]byte
	if n, err := r.ReadAt(one[:], 0); n == 0 && errors.Is(err, io.EOF) {
		return Raw, nil
	}
	head, err := Head(r)
	if err != nil {
		return "", err
	}
	return Format(head, name), nil
}
