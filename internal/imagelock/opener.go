// The qcow2 engine's Opener that locks every host file it opens: image, backing and data files.
package imagelock

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/qnbd/qnbd/qcow2"
)

// OpenFunc is the signature of qcow2.OpenOptions.Opener.
type OpenFunc func(path string, o qcow2.FileOptions) (qcow2.Storage, error)

// FileHolder is implemented by Storages that can give the *os.File they do I/O on
// (qcow2.FileStorage does). Opener locks that very file, so the locks live exactly as long as
// the Storage: closing it drops them.
type FileHolder interface {
	File() *os.File
}

// Opener returns a qcow2.OpenOptions.Opener that opens each host file with open (nil means
// qcow2.OpenFile) and locks it for r, as the file's role says (Request.For): the image file
// as Qcow2Image, a backing file as Qcow2Backing or RawBacking by its first bytes, an external
// data file as DataFile. A file the engine opens read-only never takes write permissions,
// whatever r asks (backing files, and the data files below them).
//
// The Storage open returns must implement FileHolder; otherwise the open fails rather than
// going on unlocked. On any failure the Storage is closed and the *Error (for a conflict)
// returned.
func Opener(r Request, open OpenFunc) OpenFunc {
	if open == nil {
		open = func(path string, o qcow2.FileOptions) (qcow2.Storage, error) {
			s, err := qcow2.OpenFile(path, o)
			if err != nil {
				return nil, err // not a typed nil in the interface
			}
			return s, nil
		}
	}
	return func(path string, o qcow2.FileOptions) (qcow2.Storage, error) {
		s, err := open(path, o)
		if err != nil {
			return nil, err
		}
		req := r
		if o.ReadOnly && req.Perm&writing != 0 {
			req.Perm = req.Perm&^writing | ConsistentRead
		}
		var kind Kind
		switch o.Role {
		case qcow2.RoleBacking:
			kind = RawBacking
			var m [4]byte
			if n, _ := s.ReadAt(m[:], 0); n == len(m) && binary.BigEndian.Uint32(m[:]) == qcow2.Magic {
				kind = Qcow2Backing
			}
		case qcow2.RoleDataFile:
			kind = DataFile
		default:
			kind = Qcow2Image
		}
		perm, shared := req.For(kind)
		if perm == 0 && shared == All {
			return s, nil
		}
		fh, ok := s.(FileHolder)
		if !ok {
			s.Close()
			return nil, fmt.Errorf("imagelock: cannot lock %s: its storage (%T) does not give its file", path, s)
		}
		if err := Lock(fh.File(), perm, shared); err != nil {
			s.Close()
			return nil, err
		}
		return s, nil
	}
}
