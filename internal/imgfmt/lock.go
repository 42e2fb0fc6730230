// Image locks (internal/imagelock) on every file an open, a check, an info query or a
// creation touches, with the permissions qemu-img takes for the same command.
package imgfmt

import (
	"errors"
	"os"
	"strings"
	"sync"

	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/internal/qcow2lock"
	"github.com/qnbd/qnbd/qcow2"
)

// lockRequest is what an open asks of the image: o.Lock when set, else qemu-img's default
// (consistent read sharing everything; write and resize too when not ReadOnly). ForceShare
// (-U) shares everything on every file.
func lockRequest(o OpenOptions) imagelock.Request {
	r := imagelock.Request{Perm: imagelock.ConsistentRead, Shared: imagelock.All}
	if !o.ReadOnly {
		r.Perm |= imagelock.Write | imagelock.Resize
	}
	if o.Lock != nil {
		r = *o.Lock
	}
	r.ForceShare = r.ForceShare || o.ForceShare
	return r
}

// lockFile locks f as a file of kind k for r; on failure it closes f.
func lockFile(f *os.File, r imagelock.Request, k imagelock.Kind) error {
	perm, shared := r.For(k)
	if err := imagelock.Lock(f, perm, shared); err != nil {
		f.Close()
		return err
	}
	return nil
}

// lockForCreate locks path, if it exists, as qemu-img create does before it truncates a file:
// write and resize, sharing all but resize, so that an image another process uses is refused
// before anything is lost. release closes the descriptor holding the locks; call it once the
// new image is written. A file that does not exist (or cannot be read) is not locked: the
// creation reports its own errors.
func lockForCreate(path string) (release func(), err error) {
	nothing := func() {}
	st, err := os.Stat(path)
	if err != nil || !(st.Mode().IsRegular() || st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0) {
		return nothing, nil
	}
	f, err := os.Open(path) // read locks need only read access
	if err != nil {
		return nothing, nil
	}
	if err := imagelock.Lock(f, imagelock.CreatePerm, imagelock.CreateShared); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// LockError is an image lock conflict met while opening an image, worded as QEMU words it:
// Text is the message after "Could not open 'IMAGE': " ("Could not open backing file: " once
// per backing level, then the lock message), and Lock names the file as QEMU names it
// (its Hint: "Is another process using the image [NAME]?").
type LockError struct {
	Text string
	Lock *imagelock.Error
}

// Error returns Text.
func (e *LockError) Error() string { return e.Text }

// Unwrap returns the lock error.
func (e *LockError) Unwrap() error { return e.Lock }

// chainNamer follows the engine as it opens an image's files (the image, its data file, then
// each backing file in turn, each backing's own data file) to know the name and backing depth
// QEMU gives each, and turns a lock conflict into a LockError with them: QEMU names a backing
// file by combining the name of the image above it with the stored name (FullBackingFilename),
// and a data file by its stored name.
type chainNamer struct {
	open qcow2lock.OpenFunc

	mu    sync.Mutex
	top   string
	files map[string]chainName // engine path -> QEMU's name, for a backing file opened twice (probe)
	next  chainName            // what the next new backing file is
	data  chainName            // what the next data file is
}

type chainName struct {
	name  string
	depth int
}

func newChainNamer(top string, open qcow2lock.OpenFunc) *chainNamer {
	return &chainNamer{open: open, top: top, files: map[string]chainName{}}
}

// opener is the qcow2.OpenOptions.Opener.
func (c *chainNamer) opener(path string, o qcow2.FileOptions) (qcow2.Storage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var cur chainName
	switch o.Role {
	case qcow2.RoleBacking:
		var ok bool
		if cur, ok = c.files[path]; !ok {
			cur = c.next
		}
	case qcow2.RoleDataFile:
		cur = c.data
	default:
		cur = chainName{name: c.top}
	}
	s, err := c.open(path, o)
	var le *imagelock.Error
	if errors.As(err, &le) {
		named := *le
		named.Path = cur.name
		return nil, &LockError{Text: strings.Repeat("Could not open backing file: ", cur.depth) + le.Error(), Lock: &named}
	}
	if err != nil {
		return nil, err
	}
	if o.Role != qcow2.RoleDataFile {
		c.files[path] = cur
		if h, err := qcow2.ReadHeader(s); err == nil {
			c.next = chainName{name: FullBackingFilename(cur.name, h.BackingFile), depth: cur.depth + 1}
			c.data = chainName{name: h.Extensions.DataFile, depth: cur.depth}
		}
	}
	return s, nil
}
