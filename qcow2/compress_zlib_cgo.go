//go:build cgo

// Deflate for compressed writes through the system zlib, with QEMU's parameters
// (block/qcow2-threads.c qcow2_compress: level Z_DEFAULT_COMPRESSION, raw stream with
// windowBits -12, memLevel 9, the default strategy): the bytes QEMU writes for the same
// cluster, so convert -c output is as small as qemu-img's (docs/compression.md).
package qcow2

/*
#cgo LDFLAGS: -lz
#include <stdlib.h>
#include <zlib.h>

// qnbd_deflate compresses src into dst as QEMU's qcow2_compress does. It returns the
// compressed length, -1 when the result does not fit in dst, -2 on a zlib error.
static long qnbd_deflate(unsigned char *dst, size_t dst_size, unsigned char *src, size_t src_size) {
	z_stream strm;
	long ret;
	strm.zalloc = Z_NULL;
	strm.zfree = Z_NULL;
	strm.opaque = Z_NULL;
	if (deflateInit2(&strm, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
		return -2;
	}
	strm.avail_in = src_size;
	strm.next_in = src;
	strm.avail_out = dst_size;
	strm.next_out = dst;
	ret = deflate(&strm, Z_FINISH);
	if (ret == Z_STREAM_END) {
		ret = dst_size - strm.avail_out;
	} else {
		ret = (ret == Z_OK) ? -1 : -2;
	}
	deflateEnd(&strm);
	return ret;
}
*/
import "C"

import (
	"errors"
	"unsafe"
)

// deflateCluster compresses src (one cluster) into at most len(src)-1 bytes, or returns
// errIncompressible.
func deflateCluster(src []byte) ([]byte, error) {
	if len(src) < 2 {
		return nil, errIncompressible
	}
	dst := make([]byte, len(src)-1)
	n := C.qnbd_deflate((*C.uchar)(unsafe.Pointer(&dst[0])), C.size_t(len(dst)),
		(*C.uchar)(unsafe.Pointer(&src[0])), C.size_t(len(src)))
	switch {
	case n == -1:
		return nil, errIncompressible
	case n < 0:
		return nil, errors.New("qcow2: zlib deflate failed")
	}
	return dst[:n], nil
}
