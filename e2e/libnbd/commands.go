// Synchronous commands: read, write, flush, trim, zero, cache, block status.
package libnbd

/*
#include <stdint.h>
#include <libnbd.h>

int qnbd_pread_structured(struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
                          uintptr_t user, uint32_t flags);
int qnbd_block_status(struct nbd_handle *h, uint64_t count, uint64_t offset, uintptr_t user,
                      uint32_t flags);
*/
import "C"

import (
	"fmt"
	"syscall"
	"unsafe"
)

// Command flags (LIBNBD_CMD_FLAG_*), the NBD_CMD_FLAG_* bits of a request.
const (
	CmdFlagFUA      = uint32(C.LIBNBD_CMD_FLAG_FUA)
	CmdFlagNoHole   = uint32(C.LIBNBD_CMD_FLAG_NO_HOLE)
	CmdFlagDF       = uint32(C.LIBNBD_CMD_FLAG_DF)
	CmdFlagReqOne   = uint32(C.LIBNBD_CMD_FLAG_REQ_ONE)
	CmdFlagFastZero = uint32(C.LIBNBD_CMD_FLAG_FAST_ZERO)
)

// base:allocation extent flags (LIBNBD_STATE_*).
const (
	StateHole = uint32(C.LIBNBD_STATE_HOLE)
	StateZero = uint32(C.LIBNBD_STATE_ZERO)
)

// Extent is one (length, flags) pair of a block-status reply.
type Extent struct {
	Length uint32
	Flags  uint32
}

// bufPtr returns a pointer libnbd may read or write len(p) bytes at. libnbd insists on a
// non-NULL buffer even for zero-length requests.
func bufPtr(p []byte) unsafe.Pointer {
	if len(p) == 0 {
		return unsafe.Pointer(&zeroLenBuf)
	}
	return unsafe.Pointer(&p[0])
}

var zeroLenBuf byte

// cmd runs a synchronous command wrapped in f.
func (h *Handle) cmd(op string, f func(*C.struct_nbd_handle) C.int) error {
	return h.set(op, f)
}

// ReadStatus says what a structured-read chunk holds (LIBNBD_READ_*).
type ReadStatus uint

// The chunk kinds of a structured read reply.
const (
	ReadData  = ReadStatus(C.LIBNBD_READ_DATA)  // NBD_REPLY_TYPE_OFFSET_DATA
	ReadHole  = ReadStatus(C.LIBNBD_READ_HOLE)  // NBD_REPLY_TYPE_OFFSET_HOLE
	ReadError = ReadStatus(C.LIBNBD_READ_ERROR) // NBD_REPLY_TYPE_ERROR_OFFSET
)

func (s ReadStatus) String() string {
	switch s {
	case ReadData:
		return "data"
	case ReadHole:
		return "hole"
	case ReadError:
		return "error"
	}
	return fmt.Sprintf("ReadStatus(%d)", uint(s))
}

// Chunk is one chunk of a structured read reply, as seen by PreadStructured's callback.
type Chunk struct {
	Status ReadStatus
	// Offset is the absolute image offset the chunk starts at; Length its size (0 for errors).
	Offset, Length uint64
	// Errno is the server's error for ReadError chunks, otherwise any earlier error (or 0).
	Errno syscall.Errno
}

// Pread reads len(p) bytes at offset (NBD_CMD_READ). flags may include CmdFlagDF, which
// libnbd 1.14 only accepts on structured reads, so such calls go through PreadStructured.
func (h *Handle) Pread(p []byte, offset uint64, flags uint32) error {
	if flags&CmdFlagDF != 0 {
		return h.PreadStructured(p, offset, flags, nil)
	}
	return h.cmd("nbd_pread", func(hp *C.struct_nbd_handle) C.int {
		return C.nbd_pread(hp, bufPtr(p), C.size_t(len(p)), C.uint64_t(offset), C.uint32_t(flags))
	})
}

// PreadStructured reads like Pread and calls fn (if not nil) for each chunk of the server's
// structured reply, so a test can see how the server split it into data and holes. If fn
// returns an error, the read fails with it.
func (h *Handle) PreadStructured(p []byte, offset uint64, flags uint32, fn func(Chunk) error) error {
	var id uintptr
	var cb *chunkCallback
	if fn != nil {
		cb = &chunkCallback{fn: fn}
		id = callbacks.add(cb)
	}
	err := h.cmd("nbd_pread_structured", func(hp *C.struct_nbd_handle) C.int {
		return C.qnbd_pread_structured(hp, bufPtr(p), C.size_t(len(p)), C.uint64_t(offset), C.uintptr_t(id), C.uint32_t(flags))
	})
	if cb != nil && cb.err != nil {
		return cb.err
	}
	return err
}

// Pwrite writes p at offset (NBD_CMD_WRITE). flags may include CmdFlagFUA.
func (h *Handle) Pwrite(p []byte, offset uint64, flags uint32) error {
	return h.cmd("nbd_pwrite", func(hp *C.struct_nbd_handle) C.int {
		return C.nbd_pwrite(hp, bufPtr(p), C.size_t(len(p)), C.uint64_t(offset), C.uint32_t(flags))
	})
}

// Flush asks the server to make completed writes durable (NBD_CMD_FLUSH).
func (h *Handle) Flush(flags uint32) error {
	return h.cmd("nbd_flush", func(hp *C.struct_nbd_handle) C.int { return C.nbd_flush(hp, C.uint32_t(flags)) })
}

// Trim discards count bytes at offset (NBD_CMD_TRIM). flags may include CmdFlagFUA.
func (h *Handle) Trim(count, offset uint64, flags uint32) error {
	return h.cmd("nbd_trim", func(hp *C.struct_nbd_handle) C.int {
		return C.nbd_trim(hp, C.uint64_t(count), C.uint64_t(offset), C.uint32_t(flags))
	})
}

// Zero writes count zero bytes at offset (NBD_CMD_WRITE_ZEROES). flags may include
// CmdFlagFUA, CmdFlagNoHole and CmdFlagFastZero.
func (h *Handle) Zero(count, offset uint64, flags uint32) error {
	return h.cmd("nbd_zero", func(hp *C.struct_nbd_handle) C.int {
		return C.nbd_zero(hp, C.uint64_t(count), C.uint64_t(offset), C.uint32_t(flags))
	})
}

// Cache asks the server to prefetch count bytes at offset (NBD_CMD_CACHE).
func (h *Handle) Cache(count, offset uint64, flags uint32) error {
	return h.cmd("nbd_cache", func(hp *C.struct_nbd_handle) C.int {
		return C.nbd_cache(hp, C.uint64_t(count), C.uint64_t(offset), C.uint32_t(flags))
	})
}

// BlockStatus asks for the status of count bytes at offset (NBD_CMD_BLOCK_STATUS) in every
// negotiated metadata context. fn is called once per context reply chunk with the offset the
// chunk starts at and its extents. If fn returns an error, the command fails and BlockStatus
// returns that error. flags may include CmdFlagReqOne.
func (h *Handle) BlockStatus(count, offset uint64, flags uint32, fn func(metacontext string, offset uint64, extents []Extent) error) error {
	cb := &extentCallback{fn: fn}
	id := callbacks.add(cb)
	err := h.cmd("nbd_block_status", func(hp *C.struct_nbd_handle) C.int {
		return C.qnbd_block_status(hp, C.uint64_t(count), C.uint64_t(offset), C.uintptr_t(id), C.uint32_t(flags))
	})
	if cb.err != nil {
		return cb.err
	}
	return err
}
