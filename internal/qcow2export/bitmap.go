// Dirty bitmaps (qemu:dirty-bitmap:NAME) from the engine's loaded persistent bitmaps.
package qcow2export

import (
	"context"

	"github.com/qnbd/qnbd/server"
)

// DirtyBitmap answers qemu:dirty-bitmap:NAME as qemu-nbd does: dirty runs (StateDirty) and
// clean ones, at the bitmap's granularity, cut at the request's bounds.
func (b *Backend) DirtyBitmap(_ context.Context, name string, off, length uint64) ([]server.Extent, error) {
	ext, err := b.img.BitmapExtents(name, off, min(length, mapChunk))
	if err != nil {
		return nil, classify(err)
	}
	out := make([]server.Extent, 0, len(ext))
	for _, e := range ext {
		var f uint32
		if e.Dirty {
			f = server.StateDirty
		}
		out = append(out, server.Extent{Length: e.Length, Flags: f})
	}
	return out, nil
}
