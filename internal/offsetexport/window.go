// Windows with an end: QEMU's raw driver with both offset= and size=.
package offsetexport

import (
	"fmt"

	"github.com/qnbd/qnbd/server"
)

// WindowError refuses a size= that does not fit or is not whole sectors, in QEMU's words.
type WindowError struct {
	Offset, Size, FileSize uint64
	Unaligned              bool // the window fits, but Size is not whole sectors
}

func (e *WindowError) Error() string {
	if e.Unaligned {
		return fmt.Sprintf("Specified size is not multiple of %d", sector)
	}
	// QEMU's message, with its two spaces before "actual".
	return fmt.Sprintf("The sum of offset (%d) and size (%d) has to be smaller or equal to the  actual size of the containing file (%d)",
		e.Offset, e.Size, e.FileSize)
}

// NewWindow returns inner's bytes [off, off+size), as QEMU's raw driver exports them with
// offset= and size=. QEMU's checks come in its order: the offset past the end
// (TooLargeError), then the window past the end, then a size that is not whole sectors
// (WindowError).
func NewWindow(inner server.Backend, off, size uint64) (*Backend, error) {
	n := inner.Size()
	switch {
	case off > n:
		return nil, &TooLargeError{Offset: off, Size: n}
	case n-off < size:
		return nil, &WindowError{Offset: off, Size: size, FileSize: n}
	case size%sector != 0:
		return nil, &WindowError{Offset: off, Size: size, FileSize: n, Unaligned: true}
	}
	return &Backend{inner: inner, off: off, end: size, size: size}, nil
}
