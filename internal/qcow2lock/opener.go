// The qcow2 engine's Opener that locks every host file it opens: image, backing and data files.
package qcow2lock

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/qnbd/qnbd/internal/imagelock"
	"github.com/qnbd/qnbd/qcow2"
)

// OpenFunc is the signature of qcow2.OpenOptions.Opener.
type OpenFunc func(path string, o qcow2.FileOptions) (qcow2.Storage, error)

// FileHolder is implemented by Storages that can give the *os.File they do I/O on
// (qcow2.FileStorage does). Opener locks that very file.
type FileHolder interface {
	File() *os.File
}

// Opener returns a qcow2.OpenOptions.Opener that opens each host file with open (nil means
// qcow2.OpenFile) and locks it for r, as the file's role says (imagelock.Request.For): the
// image file as Qcow2Image, a backing file as Qcow2Backing or RawBacking by its first bytes,
// an external data file as DataFile. A file the engine opens read-only never takes write
// permissions, whatever r asks (imagelock.Request.ReadOnly).
//
// The Storage open returns must implement FileHolder; otherwise the open fails rather than
// going on unlocked. On any failure the Storage is closed and the *imagelock.Error (for a
// conflict) returned.
func Opener(r imagelock.Request, open OpenFunc) OpenFunc {
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
		kind := kindOf(s, o.Role)
		if !locks(r, kind, o.ReadOnly) {
			return s, nil
		}
		fh, ok := s.(FileHolder)
		if !ok {
			s.Close()
			return nil, fmt.Errorf("imagelock: cannot lock %s: its storage (%T) does not give its file", path, s)
		}
		if err := r.LockAs(fh.File(), kind, o.ReadOnly); err != nil {
			s.Close()
			return nil, err
		}
		return s, nil
	}
}

// locks reports whether r takes any lock on a file of kind k.
func locks(r imagelock.Request, k imagelock.Kind, readOnly bool) bool {
	if readOnly {
		r = r.ReadOnly()
	}
	perm, shared := r.For(k)
	return perm != 0 || shared != imagelock.All
}

// kindOf is the lock kind of a host file by the part it plays in the image; a backing file is
// a qcow2 or a raw backing file by its magic.
func kindOf(s qcow2.Storage, role qcow2.FileRole) imagelock.Kind {
	switch role {
	case qcow2.RoleBacking:
		var m [4]byte
		if n, _ := s.ReadAt(m[:], 0); n == len(m) && binary.BigEndian.Uint32(m[:]) == qcow2.Magic {
			return imagelock.Qcow2Backing
		}
		return imagelock.RawBacking
	case qcow2.RoleDataFile:
		return imagelock.DataFile
	}
	return imagelock.Qcow2Image
}
