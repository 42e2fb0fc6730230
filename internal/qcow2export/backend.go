// Backend: the qcow2 image as a server.Backend (size, read, write, flush, close).
package qcow2export

import (
	"context"

	"github.com/qnbd/qnbd/qcow2"
	"github.com/qnbd/qnbd/server"
)

// Options select qemu-nbd's per-export behaviour.
type Options struct {
	// Discard is --discard=unmap: TRIM deallocates; without it TRIM does nothing. (WRITE_ZEROES
	// without NO_HOLE deallocates either way, as in qemu-nbd 7.2.)
	Discard bool
}

// Backend serves one open qcow2 image. It implements server.Backend, server.Trimmer,
// server.Zeroer, server.Cacher, server.BlockStatuser, server.ReadSplitter and
// server.DepthStatuser.
type Backend struct {
	img  *qcow2.Image
	opts Options
	geo  []layerGeometry // the chain's layers, for ReadExtents
}

// Interfaces the server looks for.
var (
	_ server.Backend       = (*Backend)(nil)
	_ server.Trimmer       = (*Backend)(nil)
	_ server.Zeroer        = (*Backend)(nil)
	_ server.Cacher        = (*Backend)(nil)
	_ server.BlockStatuser = (*Backend)(nil)
	_ server.DepthStatuser = (*Backend)(nil)
)

// New returns a Backend over img. The caller keeps ownership of img: img.Close must follow
// the Backend's Close.
func New(img *qcow2.Image, o Options) *Backend {
	return &Backend{img: img, opts: o, geo: chainGeometry(img)}
}

// Image returns the image being served.
func (b *Backend) Image() *qcow2.Image { return b.img }

// Size is the virtual disk size.
func (b *Backend) Size() uint64 { return b.img.Size() }

// ReadAt fills p from off.
func (b *Backend) ReadAt(_ context.Context, p []byte, off uint64) error {
	_, err := b.img.ReadAt(p, int64(off))
	return classify(err)
}

// WriteAt writes p at off; with fua the image is flushed before it returns.
func (b *Backend) WriteAt(_ context.Context, p []byte, off uint64, fua bool) error {
	if _, err := b.img.WriteAt(p, int64(off)); err != nil {
		return classify(err)
	}
	return b.fua(fua)
}

// Flush makes every write that has returned durable.
func (b *Backend) Flush(context.Context) error { return classify(b.img.Flush()) }

// fua flushes when a request asked for Force Unit Access. QEMU's qcow2 driver has no native
// FUA either: its block layer emulates it with a flush after the write.
func (b *Backend) fua(fua bool) error {
	if !fua {
		return nil
	}
	return classify(b.img.Flush())
}

// Close releases the Backend; it holds nothing of its own, and does not close the image.
func (b *Backend) Close() error { return nil }
