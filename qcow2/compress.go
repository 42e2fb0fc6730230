// Compressed clusters: decoding (and encoding) one cluster of zlib (raw deflate) or zstd data.
package qcow2

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// What QEMU writes and accepts (block/qcow2-threads.c), which qnbd matches:
//
//   - zlib: a raw deflate stream (no zlib header or checksum), compressed with a 4 KiB window
//     ("deflateInit2(..., -12, ...)"). Reading inflates until the cluster is full; the input
//     is the sector range the L2 entry names, so it may end with bytes that belong to nothing
//     or to the next compressed cluster. A stream that ends (or breaks) before a full cluster
//     is an error; data after a full cluster is ignored ("decompression stops when it has
//     produced a cluster of data", qcow2.txt), which is what iotest 214 relies on.
//   - zstd: one or more zstd frames, streamed until the cluster is full. QEMU's loop stops when
//     the output is full and then fails if the frame it was in is not finished, so a frame that
//     would produce more than the cluster is an error, unlike zlib. A frame that ends before the
//     cluster is full is followed by the next one; input that runs out first is an error.
//
// Memory is bounded: dst is the only output buffer (nothing decodes into a growing slice), the
// inflaters are pooled, and one shared zstd decoder with a fixed number of workers decodes
// whole frames straight into dst.

// maxZstdWindow is the largest zstd window accepted: libzstd's default limit
// (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27), which is what QEMU decodes with. Frames are decoded
// straight into the cluster buffer, so the window does not size any allocation.
const maxZstdWindow = 1 << 27

// decompress decodes the compressed data in src, of compression type ctype, into dst, which
// is exactly one cluster. It fails with ErrCompressedData unless the data produces at least
// len(dst) bytes (zlib) or frames ending exactly at len(dst) bytes (zstd), and with a
// *FormatError for an unknown compression type. On error dst holds garbage.
func decompress(ctype uint8, src, dst []byte) error {
	switch ctype {
	case CompressionZlib:
		return inflateCluster(src, dst)
	case CompressionZstd:
		return zstdCluster(src, dst)
	}
	return &FormatError{Off: offCompressionType, Field: "compression_type", Val: ctype, Msg: "unknown compression type", Class: ErrUnsupported}
}

func compressedErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrCompressedData, fmt.Sprintf(format, args...))
}

// inflater is a pooled deflate decoder with the reader it reads from.
type inflater struct {
	src bytes.Reader
	fr  io.ReadCloser
}

var inflaters sync.Pool

func inflateCluster(src, dst []byte) error {
	in, _ := inflaters.Get().(*inflater)
	if in == nil {
		in = &inflater{}
		in.src.Reset(src)
		// bytes.Reader is an io.ByteReader, so flate reads it directly without buffering.
		in.fr = flate.NewReader(&in.src)
	} else {
		in.src.Reset(src)
		if err := in.fr.(flate.Resetter).Reset(&in.src, nil); err != nil {
			return compressedErr("zlib: %v", err)
		}
	}
	n, err := io.ReadFull(in.fr, dst)
	in.src.Reset(nil)
	inflaters.Put(in)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return compressedErr("zlib: %d bytes of compressed data inflate to only %d of %d bytes", len(src), n, len(dst))
		}
		return compressedErr("zlib: after %d of %d bytes: %v", n, len(dst), err)
	}
	return nil
}

var zstdDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0), // one worker per CPU; more callers wait
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(maxZstdWindow),
		zstd.WithDecoderMaxMemory(maxZstdWindow),
		zstd.WithDecodeAllCapLimit(true), // never decode past cap(dst)
	)
})

// Zstd frame format (RFC 8878 §3.1): what zstdFrameLen needs to find where a frame ends
// without decoding it.
const (
	zstdMagic          = 0xFD2FB528
	zstdSkippableMask  = 0xFFFFFFF0
	zstdSkippableMagic = 0x184D2A50
	zstdBlockHeader    = 3
	zstdChecksumLen    = 4
)

// zstdFrameLen returns the length of the frame (or skippable frame) at the start of b, and
// whether it is a skippable one. Block contents are not examined.
func zstdFrameLen(b []byte) (int, bool, error) {
	if len(b) < 4 {
		return 0, false, compressedErr("zstd: truncated frame magic")
	}
	magic := binary.LittleEndian.Uint32(b)
	if magic&zstdSkippableMask == zstdSkippableMagic {
		if len(b) < 8 {
			return 0, true, compressedErr("zstd: truncated skippable frame")
		}
		n := uint64(binary.LittleEndian.Uint32(b[4:])) + 8
		if n > uint64(len(b)) {
			return 0, true, compressedErr("zstd: skippable frame of %d bytes runs past the %d-byte input", n, len(b))
		}
		return int(n), true, nil
	}
	if magic != zstdMagic {
		return 0, false, compressedErr("zstd: bad frame magic %#08x", magic)
	}
	if len(b) < 5 {
		return 0, false, compressedErr("zstd: truncated frame header")
	}
	fhd := b[4]
	single := fhd&(1<<5) != 0
	hdr := 5
	if !single {
		hdr++ // Window_Descriptor
	}
	hdr += [4]int{0, 1, 2, 4}[fhd&3] // Dictionary_ID
	fcs := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcs == 0 && single {
		fcs = 1
	}
	pos := hdr + fcs
	for {
		if pos+zstdBlockHeader > len(b) {
			return 0, false, compressedErr("zstd: frame truncated at byte %d of %d", pos, len(b))
		}
		bh := uint32(b[pos]) | uint32(b[pos+1])<<8 | uint32(b[pos+2])<<16
		pos += zstdBlockHeader
		size := int(bh >> 3)
		switch (bh >> 1) & 3 {
		case 1: // RLE_Block: one byte repeated Block_Size times
			size = 1
		case 3:
			return 0, false, compressedErr("zstd: reserved block type")
		}
		if size > len(b)-pos {
			return 0, false, compressedErr("zstd: block of %d bytes runs past the %d-byte input", size, len(b))
		}
		pos += size
		if bh&1 != 0 { // Last_Block
			break
		}
	}
	if fhd&(1<<2) != 0 { // Content_Checksum_flag
		pos += zstdChecksumLen
		if pos > len(b) {
			return 0, false, compressedErr("zstd: truncated frame checksum")
		}
	}
	return pos, false, nil
}

func zstdCluster(src, dst []byte) error {
	dec, err := zstdDecoder()
	if err != nil {
		return fmt.Errorf("qcow2: zstd decoder: %w", err)
	}
	out := 0
	for out < len(dst) {
		if len(src) == 0 {
			return compressedErr("zstd: input ends after %d of %d bytes", out, len(dst))
		}
		n, skip, err := zstdFrameLen(src)
		if err != nil {
			return err
		}
		frame := src[:n]
		src = src[n:]
		if skip {
			continue
		}
		// cap(dst[out:out]) is the room left in the cluster; WithDecodeAllCapLimit makes a
		// frame that would produce more fail instead of growing the slice.
		got, err := dec.DecodeAll(frame, dst[out:out])
		if err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrFrameSizeExceeded) {
				return compressedErr("zstd: a frame decodes past the end of the %d-byte cluster", len(dst))
			}
			return compressedErr("zstd: after %d of %d bytes: %v", out, len(dst), err)
		}
		if len(got) > len(dst)-out {
			return compressedErr("zstd: a frame decodes past the end of the %d-byte cluster", len(dst))
		}
		if len(got) > 0 && &got[0] != &dst[out] {
			copy(dst[out:], got) // the decoder used its own buffer
		}
		out += len(got)
	}
	return nil
}

var zstdEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedDefault),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), // EncodeAll from every compressing goroutine
		zstd.WithEncoderCRC(false),                         // QEMU writes no checksum
		zstd.WithLowerEncoderMem(true),
	)
})

// compress returns src (one cluster) compressed with ctype in the form QEMU writes: a raw
// deflate stream with a 4 KiB window, or a single zstd frame. It returns errIncompressible
// when the result would not be smaller than src.
func compress(ctype uint8, src []byte) ([]byte, error) {
	var out []byte
	switch ctype {
	case CompressionZlib:
		var err error
		if out, err = deflateCluster(src); err != nil {
			return nil, err
		}
	case CompressionZstd:
		enc, err := zstdEncoder()
		if err != nil {
			return nil, err
		}
		out = enc.EncodeAll(src, make([]byte, 0, len(src)))
	default:
		return nil, &FormatError{Off: -1, Field: "compression_type", Val: ctype, Msg: "unknown compression type", Class: ErrUnsupported}
	}
	if len(out) >= len(src) {
		return nil, errIncompressible
	}
	return out, nil
}
