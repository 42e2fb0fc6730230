// The block-0 guard of a probed raw image.
package probe

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
)

// Block0 is the part of a probed raw image the guard protects: what QEMU's raw driver probes
// before letting a write through.
const Block0 = 512

// ErrWouldChangeFormat is returned, wrapped in a *FormatChangeError, when a change to a
// probed raw image would make it probe as another format. errors.Is matches it and EPERM,
// the errno QEMU's raw driver returns for the same write.
var ErrWouldChangeFormat = errors.New("change refused on a probed raw image")

// FormatChangeError names the format a refused change would have made the image probe as.
type FormatChangeError struct{ Format string }

func (e *FormatChangeError) Error() string {
	return fmt.Sprintf("write would make a probed raw image probe as %s (give the format, -f raw, to allow it)", e.Format)
}

// Is matches ErrWouldChangeFormat and syscall.EPERM.
func (e *FormatChangeError) Is(target error) bool {
	return target == ErrWouldChangeFormat || target == syscall.EPERM
}

// Guard protects block 0 of one probed raw image. The zero value is ready; a nil *Guard
// guards nothing (the format was given).
type Guard struct {
	mu sync.Mutex
}

// Touches reports whether a change of [off, off+n) reaches block 0.
func Touches(off, n uint64) bool { return n > 0 && off < Block0 }

// Change makes a change of [off, off+n) to the image readable through r. When g is nil or
// the range misses block 0, it only calls apply. Otherwise, holding g's lock, it reads block
// 0 (zeros past the end of the file), lets edit apply the change to that copy (edit receives
// the copy and the offset of the change), and calls apply only if the copy still probes as
// raw; if not it returns a *FormatChangeError and changes nothing.
func (g *Guard) Change(r io.ReaderAt, off, n uint64, edit func(block0 []byte, off uint64), apply func() error) error {
	if g == nil || !Touches(off, n) {
		return apply()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	b := make([]byte, Block0)
	m, err := r.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	clear(b[m:])
	edit(b, off)
	if f := Format(b, ""); f != Raw {
		return &FormatChangeError{Format: f}
	}
	return apply()
}

// Overlay is the edit of a write of p: its bytes that fall inside block 0.
func Overlay(p []byte) func([]byte, uint64) {
	return func(b []byte, off uint64) { copy(b[off:], p) }
}

// Zeroed is the edit of a write-zeroes or trim of n bytes: zeros inside block 0.
func Zeroed(n uint64) func([]byte, uint64) {
	return func(b []byte, off uint64) { clear(b[off:min(uint64(len(b)), off+n)]) }
}
