// Which permissions each host file of an image gets, from what the program asks of the image.
package imagelock

// Request is what a program asks of an image it opens, in the terms of a QEMU block-backend
// user: the permissions it takes and the ones it lets others take meanwhile. The image
// format then decides what that means for each host file (Request.For), as QEMU's format
// drivers do for their children.
type Request struct {
	// Perm is what the program takes: ConsistentRead to read the guest data, Write (and
	// Resize) to change it. Zero means the program reads metadata only (qemu-img info):
	// then only the image file itself is locked, and only for what it refuses to share.
	Perm Perm
	// Shared is what the program lets others take at the same time.
	Shared Perm
	// ForceShare is qemu-img's -U: every file shares every permission, whatever the format
	// would refuse. QEMU allows it only for read-only opens; the caller enforces that.
	ForceShare bool
}

// Kind is the part a host file plays in an open image.
type Kind int

const (
	// RawImage is a raw image opened by the program: the file is the disk.
	RawImage Kind = iota
	// Qcow2Image is a qcow2 image file opened by the program.
	Qcow2Image
	// Qcow2Backing is a qcow2 backing file below an image (at any depth).
	Qcow2Backing
	// RawBacking is a raw backing file below a qcow2 image.
	RawBacking
	// DataFile is a qcow2 image's external data file.
	DataFile
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case RawImage:
		return "raw image"
	case Qcow2Image:
		return "qcow2 image"
	case Qcow2Backing:
		return "qcow2 backing file"
	case RawBacking:
		return "raw backing file"
	case DataFile:
		return "external data file"
	}
	return "unknown file kind"
}

// writing are the permissions that make a program a writer.
const writing = Write | WriteUnchanged | Resize

// For returns the permissions to lock on a file of kind k, as QEMU 7.2 derives them (block.c
// bdrv_default_perms and the qcow2 and raw format drivers; checked against qemu-img, qemu-io
// and qemu-nbd with strace):
//
//	file            perm                         shared
//	RawImage        r.Perm                       r.Shared
//	Qcow2Image      read: CR; write: CR|W|RS     r.Shared minus W, RS (metadata lives there)
//	Qcow2Backing    CR                           All minus W, RS
//	RawBacking      CR                           All if r.Shared has W, else All minus W, RS
//	DataFile        read: CR; write: CR|W|RS     r.Shared minus RS
//
// (CR consistent read, W write, RS resize.) A qcow2 file always takes resize when written,
// since clusters are allocated at its end. A backing file is shared for writing only when the
// program itself copes with changing data (it shares W), and a qcow2 backing file never is,
// for its metadata. With r.Perm zero (metadata only) a qcow2 image takes nothing and still
// refuses to share W and RS; backing and data files are then not locked at all, as QEMU does
// not open them. With ForceShare, shared is All everywhere.
func (r Request) For(k Kind) (perm, shared Perm) {
	shared = r.Shared & All
	if r.ForceShare {
		shared = All
	}
	if r.Perm&All == 0 && k != RawImage && k != Qcow2Image {
		return 0, All
	}
	rw := r.Perm&writing != 0
	switch k {
	case RawImage:
		return r.Perm & All, shared
	case Qcow2Image, DataFile:
		if r.Perm&All != 0 {
			perm = ConsistentRead
		}
		if rw {
			perm |= Write | Resize
		}
		if r.ForceShare {
			return perm, All
		}
		if k == DataFile {
			return perm, shared &^ Resize
		}
		return perm, shared &^ (Write | Resize)
	case Qcow2Backing, RawBacking:
		// bdrv_default_perms_for_cow: a backing file is read, and written or resized by
		// others only if the program accepts changing data.
		if r.ForceShare {
			return ConsistentRead, All
		}
		shared = All
		if r.Shared&Write == 0 || k == Qcow2Backing {
			shared &^= Write | Resize
		}
		return ConsistentRead, shared
	}
	return 0, All
}

// CreatePerm and CreateShared are what a program creating (or overwriting) an image holds on
// the image file and on its data file while it writes the new structures (qemu-img create,
// and convert's target before it is opened): write and resize, sharing all but resize.
const (
	CreatePerm   = Write | Resize
	CreateShared = All &^ Resize
)
