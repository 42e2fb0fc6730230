// LockAs: the locks a program's request puts on one file of an open image, by its kind.
package imagelock

import "os"

// ReadOnly is r for a file opened read-only: a writer's write permissions become a consistent
// read, since a read-only descriptor never takes write permissions (a backing file, and the
// data files below it).
func (r Request) ReadOnly() Request {
	if r.Perm&writing != 0 {
		r.Perm = r.Perm&^writing | ConsistentRead
	}
	return r
}

// LockAs locks f, a file of the kind k in an open image, for r (Request.For), and does
// nothing when r takes nothing there. readOnly says the file is open read-only (ReadOnly).
func (r Request) LockAs(f *os.File, k Kind, readOnly bool) error {
	if readOnly {
		r = r.ReadOnly()
	}
	perm, shared := r.For(k)
	if perm == 0 && shared == All {
		return nil
	}
	return Lock(f, perm, shared)
}
