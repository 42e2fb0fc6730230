// Package qcow2export serves a qcow2 image over NBD: it adapts *qcow2.Image to server.Backend
// and to the optional interfaces the server looks for (Trimmer, Zeroer, Cacher, BlockStatuser,
// DepthStatuser), with qemu-nbd's semantics for each command so that qnbd answers a client as
// qemu-nbd would on the same image.
//
// # Commands
//
//	READ          Image.ReadAt
//	WRITE         Image.WriteAt; with FUA, then Image.Flush (the engine has no cheaper
//	              per-request durable path; with WriteThrough it already flushed)
//	FLUSH         Image.Flush
//	TRIM          Image.Discard when Options.Discard (--discard=unmap), else nothing; the
//	              server advertises TRIM only in that mode, as qemu-nbd does
//	WRITE_ZEROES  Image.Zero (QEMU's write-zeroes), deallocating (unmap) without NO_HOLE
//	              (whatever Options.Discard, as qemu-nbd 7.2); FAST_ZERO is ZeroNoFallback:
//	              ENOTSUP where zero bytes would have to be written, as QEMU's NO_FALLBACK
//	CACHE         reads the allocated parts of the range (data and compressed clusters,
//	              in any layer) and drops the bytes: a prefetch into the host page cache
//	READ chunks   ReadExtents: BlockStatus runs cut where QEMU ends one block-status answer
//	              (L2 slice boundaries, single compressed clusters; readsplit.go)
//	BLOCK_STATUS  base:allocation and qemu:allocation-depth from Image.BlockStatus, the
//	              engine's answer of QEMU's bdrv_block_status_above (see status.go)
//
// # Errors
//
// Engine errors become errors that match exactly one syscall errno with errors.Is, which the
// server turns into an NBD errno: ErrReadOnly is EPERM, ErrNoSpace ENOSPC, ErrOutOfRange
// EINVAL, ErrClosed ESHUTDOWN, ErrCorrupt and everything else EIO (errors.go).
//
// # Concurrency
//
// A Backend is safe for concurrent use, as the Image under it is. It has no state of its own
// besides its options, and no lock.
//
// # Direct I/O
//
// cache=none and cache=directsync need nothing here: the engine opens its files O_DIRECT
// itself (qcow2.FileOptions.Direct) and aligns every transfer (qcow2/storage_direct.go).
package qcow2export
