// Package libnbd is a small cgo binding over the system's libnbd (Debian's libnbd 1.14), the
// NBD client library that qemu, nbdcopy and nbdinfo use. qnbd's end-to-end tests drive the
// server through it, so that a reference client, not our own code, judges the protocol.
//
// # Usage
//
//	h, err := libnbd.Create()
//	if err != nil { ... }
//	defer h.Close()
//	h.AddMetaContext(libnbd.ContextBaseAllocation)
//	if err := h.ConnectUnix("/tmp/x/nbd.sock"); err != nil { ... }
//	size, _ := h.GetSize()
//	buf := make([]byte, 4096)
//	err = h.Pread(buf, 0, 0)
//	err = h.BlockStatus(uint64(size), 0, 0, func(ctx string, off uint64, ext []libnbd.Extent) error {
//		...
//	})
//
// The API mirrors libnbd's names (nbd_can_fua becomes CanFua) so libnbd(3) and the
// per-call man pages document the semantics; this package only adapts types.
//
// # Errors
//
// A failed call returns *Error, carrying libnbd's message (nbd_get_error) and errno
// (nbd_get_errno). libnbd keeps both in thread-local storage, so every call runs on a locked
// OS thread together with the reads of that state. errors.Is(err, syscall.EIO) and similar
// work when libnbd supplied an errno.
//
// # Concurrency
//
// A Handle may be used from many goroutines, but libnbd takes a lock on the handle for each
// call, and a synchronous command (Pread...) holds it until its reply arrives: synchronous
// commands on one handle never overlap. To keep many requests in flight on one connection use
// the Aio* calls; to load a server from several goroutines, give each its own Handle. Close
// waits for calls already running on the handle to return, then frees it; calls after Close
// return ErrClosed. Callbacks (BlockStatus, OptList) run on the calling goroutine while
// libnbd holds the handle lock: they must not call back into the same Handle.
//
// # Asynchronous commands and buffers
//
// AioPread and AioPwrite pass a Go slice that libnbd keeps using after the call returns. The
// binding pins the slice (runtime.Pinner) until libnbd retires the command, which happens in
// AioCommandCompleted or Close; the caller must not touch the slice before that. A test keeps
// many requests in flight by issuing them, then looping over Poll, AioPeekCommandCompleted
// and AioCommandCompleted (or simply AioWait).
package libnbd
