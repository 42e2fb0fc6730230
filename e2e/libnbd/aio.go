// Asynchronous commands: issue many, then poll and retire them by cookie.
package libnbd

/*
#include <stdint.h>
#include <libnbd.h>

int64_t qnbd_aio_pread(struct nbd_handle *h, void *buf, size_t count, uint64_t offset,
                       uintptr_t user, uint32_t flags);
int64_t qnbd_aio_pwrite(struct nbd_handle *h, const void *buf, size_t count, uint64_t offset,
                        uintptr_t user, uint32_t flags);
int64_t qnbd_aio_flush(struct nbd_handle *h, uint32_t flags);
int64_t qnbd_aio_trim(struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags);
int64_t qnbd_aio_zero(struct nbd_handle *h, uint64_t count, uint64_t offset, uint32_t flags);
*/
import "C"

import "unsafe"

// Cookie identifies an asynchronous command until it is retired.
type Cookie int64

// aio issues one asynchronous command wrapped in f.
func (h *Handle) aio(op string, f func(*C.struct_nbd_handle) C.int64_t) (Cookie, error) {
	var c int64
	err := h.with(func(p *C.struct_nbd_handle) error {
		var err error
		c, err = callInt64(op, func() C.int64_t { return f(p) })
		return err
	})
	return Cookie(c), err
}

// pin pins p's backing array until libnbd calls the completion's free function (at
// retirement, or at once if the call fails), and returns the id to pass as user_data.
func pin(p []byte) (unsafe.Pointer, uintptr) {
	ptr := bufPtr(p)
	pb := &pinnedBuffer{}
	pb.pinner.Pin(ptr)
	return ptr, callbacks.add(pb)
}

// AioPread queues a read of len(p) bytes at offset. p must not be touched until the command
// is retired (AioCommandCompleted returned true or an error, or Close).
func (h *Handle) AioPread(p []byte, offset uint64, flags uint32) (Cookie, error) {
	ptr, id := pin(p)
	return h.aio("nbd_aio_pread", func(hp *C.struct_nbd_handle) C.int64_t {
		return C.qnbd_aio_pread(hp, ptr, C.size_t(len(p)), C.uint64_t(offset), C.uintptr_t(id), C.uint32_t(flags))
	})
}

// AioPwrite queues a write of p at offset; p must stay unchanged until the command is retired.
func (h *Handle) AioPwrite(p []byte, offset uint64, flags uint32) (Cookie, error) {
	ptr, id := pin(p)
	return h.aio("nbd_aio_pwrite", func(hp *C.struct_nbd_handle) C.int64_t {
		return C.qnbd_aio_pwrite(hp, ptr, C.size_t(len(p)), C.uint64_t(offset), C.uintptr_t(id), C.uint32_t(flags))
	})
}

// AioFlush queues NBD_CMD_FLUSH.
func (h *Handle) AioFlush(flags uint32) (Cookie, error) {
	return h.aio("nbd_aio_flush", func(hp *C.struct_nbd_handle) C.int64_t {
		return C.qnbd_aio_flush(hp, C.uint32_t(flags))
	})
}

// AioTrim queues NBD_CMD_TRIM.
func (h *Handle) AioTrim(count, offset uint64, flags uint32) (Cookie, error) {
	return h.aio("nbd_aio_trim", func(hp *C.struct_nbd_handle) C.int64_t {
		return C.qnbd_aio_trim(hp, C.uint64_t(count), C.uint64_t(offset), C.uint32_t(flags))
	})
}

// AioZero queues NBD_CMD_WRITE_ZEROES.
func (h *Handle) AioZero(count, offset uint64, flags uint32) (Cookie, error) {
	return h.aio("nbd_aio_zero", func(hp *C.struct_nbd_handle) C.int64_t {
		return C.qnbd_aio_zero(hp, C.uint64_t(count), C.uint64_t(offset), C.uint32_t(flags))
	})
}

// Poll runs the connection's state machine until there is progress or timeoutMs passes
// (-1: no timeout). It returns 1 on progress, 0 on timeout (nbd_poll).
func (h *Handle) Poll(timeoutMs int) (int, error) {
	var rc int
	err := h.with(func(p *C.struct_nbd_handle) error {
		var err error
		rc, err = callInt("nbd_poll", func() C.int { return C.nbd_poll(p, C.int(timeoutMs)) })
		return err
	})
	return rc, err
}

// AioCommandCompleted retires the command if it has completed: it returns (true, nil) when it
// succeeded, (false, nil) while it is still in flight, and (false, err) when it failed (and is
// then retired too). Retiring releases the command's buffer.
func (h *Handle) AioCommandCompleted(c Cookie) (bool, error) {
	var done bool
	err := h.with(func(p *C.struct_nbd_handle) error {
		var err error
		done, err = callBool("nbd_aio_command_completed", func() C.int {
			return C.nbd_aio_command_completed(p, C.uint64_t(c))
		})
		return err
	})
	return done, err
}

// AioPeekCommandCompleted returns the cookie of a completed command awaiting retirement, 0 if
// commands are in flight but none has completed; it fails when nothing is in flight.
func (h *Handle) AioPeekCommandCompleted() (Cookie, error) {
	var c int64
	err := h.with(func(p *C.struct_nbd_handle) error {
		var err error
		c, err = callInt64("nbd_aio_peek_command_completed", func() C.int64_t {
			return C.nbd_aio_peek_command_completed(p)
		})
		return err
	})
	return Cookie(c), err
}

// AioInFlight counts the commands not yet retired, including completed ones.
func (h *Handle) AioInFlight() (int, error) {
	var n int
	err := h.with(func(p *C.struct_nbd_handle) error {
		var err error
		n, err = callInt("nbd_aio_in_flight", func() C.int { return C.nbd_aio_in_flight(p) })
		return err
	})
	return n, err
}

// AioWait polls until command c completes, then retires it and returns its result.
func (h *Handle) AioWait(c Cookie) error {
	for {
		done, err := h.AioCommandCompleted(c)
		if done || err != nil {
			return err
		}
		if _, err := h.Poll(-1); err != nil {
			return err
		}
	}
}

// AioWaitAny polls until some command completes, retires it, and returns its cookie and
// result. It fails when nothing is in flight.
func (h *Handle) AioWaitAny() (Cookie, error) {
	for {
		c, err := h.AioPeekCommandCompleted()
		if err != nil {
			return 0, err
		}
		if c != 0 {
			_, err := h.AioCommandCompleted(c)
			return c, err
		}
		if _, err := h.Poll(-1); err != nil {
			return 0, err
		}
	}
}
