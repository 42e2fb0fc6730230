// Backend: what the NBD frontend needs from the thing it serves.
package server

import "context"

// Backend is one export's storage. The server calls it from many goroutines at once (one per
// request in flight, across every connection to the export); implementations must be safe for
// concurrent use. Offsets and lengths are already checked against Size and the block-size
// constraints when a method is called.
//
// Errors are classified with errors.Is against syscall errnos (EIO, ENOSPC, EINVAL, EPERM,
// ENOTSUP, EDQUOT, EFBIG, EOVERFLOW); anything else becomes NBD_EIO. See errno.go.
type Backend interface {
	// Size is the export size in bytes. It must not change while the export is served.
	Size() uint64
	// ReadAt fills p from off.
	ReadAt(ctx context.Context, p []byte, off uint64) error
	// WriteAt writes p at off. With fua set, the data is durable before it returns.
	WriteAt(ctx context.Context, p []byte, off uint64, fua bool) error
	// Flush makes every write that has returned durable.
	Flush(ctx context.Context) error
}

// Trimmer is implemented by backends that can discard ranges (NBD_CMD_TRIM).
type Trimmer interface {
	// Trim tells the backend that [off, off+length) is no longer needed. Afterwards the range
	// may read back as anything the backend had there or zeros.
	Trim(ctx context.Context, off, length uint64, fua bool) error
}

// ZeroFlags modify WriteZeroes.
type ZeroFlags struct {
	// NoHole: the range must stay allocated (NBD_CMD_FLAG_NO_HOLE); without it the backend
	// may deallocate as long as the range reads back as zeros.
	NoHole bool
	// FastZero: fail with ENOTSUP rather than fall back to writing zeros slowly
	// (NBD_CMD_FLAG_FAST_ZERO).
	FastZero bool
	// FUA: durable before return.
	FUA bool
}

// Zeroer is implemented by backends that can write zeros without a payload
// (NBD_CMD_WRITE_ZEROES).
type Zeroer interface {
	WriteZeroes(ctx context.Context, off, length uint64, flags ZeroFlags) error
}

// Cacher is implemented by backends that can prefetch a range (NBD_CMD_CACHE).
type Cacher interface {
	Cache(ctx context.Context, off, length uint64) error
}

// Extent is one run of a block-status reply: Length bytes sharing Flags.
type Extent struct {
	Length uint64
	// Flags is context specific: for base:allocation, StateHole|StateZero; for
	// qemu:allocation-depth, the depth in the backing chain (0 = unallocated, 1 = this image).
	Flags uint32
}

// Block status flags of the base:allocation context (NBD proto.md "base:allocation").
const (
	// StateHole: "NBD_STATE_HOLE (bit 0): if set, the block represents a hole".
	StateHole uint32 = 1 << 0
	// StateZero: "NBD_STATE_ZERO (bit 1): if set, the block contents read as all zeroes".
	StateZero uint32 = 1 << 1
)

// BlockStatuser is implemented by backends that know their allocation (NBD_CMD_BLOCK_STATUS).
// Without it, base:allocation reports the whole range as allocated data.
type BlockStatuser interface {
	// Allocation returns extents starting at off covering at least one byte and at most
	// length bytes, in base:allocation terms. The extents must be contiguous and in order.
	Allocation(ctx context.Context, off, length uint64) ([]Extent, error)
}

// ReadSplitter is implemented by backends whose block-status answers are finer than
// base:allocation shows (which merges neighbours with equal flags). A structured READ sends
// one chunk per extent (qemu-nbd sends one per bdrv_block_status_above answer): OFFSET_HOLE
// for extents with StateZero, OFFSET_DATA for the others. Without it, the extents of
// BlockStatuser.Allocation are used.
type ReadSplitter interface {
	// ReadExtents returns extents starting at off covering at least one byte and at most
	// length bytes, in order, not merged, with base:allocation flags.
	ReadExtents(ctx context.Context, off, length uint64) ([]Extent, error)
}

// DirtyBitmapper is implemented by backends with dirty bitmaps (qemu:dirty-bitmap:NAME).
type DirtyBitmapper interface {
	// DirtyBitmap returns extents of the named bitmap starting at off, covering at least one
	// byte and at most length bytes, in order, with StateDirty on dirty ones.
	DirtyBitmap(ctx context.Context, name string, off, length uint64) ([]Extent, error)
}

// DepthStatuser is implemented by backends with a backing chain (qemu:allocation-depth).
type DepthStatuser interface {
	// AllocationDepth returns extents starting at off whose Flags are the depth at which each
	// range is allocated: 0 unallocated anywhere, 1 in the top image, 2 in its backing file...
	AllocationDepth(ctx context.Context, off, length uint64) ([]Extent, error)
}
