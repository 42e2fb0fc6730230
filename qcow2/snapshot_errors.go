// Errors of the snapshot operations.
package qcow2

import (
	"fmt"
	"syscall"
)

// ErrActiveBitmaps refuses ApplySnapshot on an image with persistent dirty bitmaps: QEMU
// loads them at open and bdrv_snapshot_goto refuses any device with dirty bitmaps (-EBUSY).
var ErrActiveBitmaps = fmt.Errorf("qcow2: Device has active dirty bitmaps: %w", syscall.EBUSY)

// hasBitmaps reports persistent bitmaps QEMU would load at open. Called with mu held.
func (img *Image) hasBitmaps() bool { return img.hdr.bitmapsConsistent() }
