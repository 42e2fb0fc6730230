//go:build !cgo

// Deflate for compressed writes without cgo: klauspost's encoder limited to QEMU's 4 KiB
// window (raw stream). QEMU inflates it; it is a few percent larger than zlib's output
// (docs/compression.md).
package qcow2

import (
	"bytes"
	"sync"

	kflate "github.com/klauspost/compress/flate"
)

// zlibWindow is QEMU's deflate window: "windowBits -12", a raw stream with a 4 KiB window.
const zlibWindow = 1 << 12

var deflaters sync.Pool

func deflateCluster(src []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(src))
	w, _ := deflaters.Get().(*kflate.Writer)
	if w == nil {
		var err error
		if w, err = kflate.NewWriterWindow(&buf, zlibWindow); err != nil {
			return nil, err
		}
	} else {
		w.Reset(&buf)
	}
	defer deflaters.Put(w)
	if _, err := w.Write(src); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if buf.Len() >= len(src) {
		return nil, errIncompressible
	}
	return buf.Bytes(), nil
}
