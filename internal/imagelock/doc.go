// Package imagelock takes the same image locks QEMU takes, so that qnbd, qnbd-img and QEMU
// (qemu-nbd, qemu-img, qemu-io, a running VM) never write one image at the same time, and so
// that each refuses the other with the same message QEMU gives.
//
// # The lock bytes
//
// QEMU's file-posix driver expresses block-layer permissions (perm.go) as shared (read)
// fcntl locks on single bytes of the image file, far past anything a reader cares about
// since locks are advisory:
//
//	byte  0 ...... 99 | 100 101 102 103 | 104 ... 199 | 200 201 202 203 | 204 ...
//	      libvirt      | "I hold" CR W WU RS|  (unused)   | "I don't share"  |
//	                   | PermByteBase+bit |             | SharedByteBase+bit
//
// A process holding permission bit i read-locks byte 100+i; one refusing to share bit i
// read-locks byte 200+i. Before it may go on, it probes (F_OFD_GETLK with a write lock) that
// nobody else holds 200+i for each bit it holds, and nobody else holds 100+i for each bit it
// refuses to share. Taking its own bytes before probing makes the check race-free. The
// messages on conflict are QEMU's: `Failed to get "write" lock` (someone refuses to share
// what we want), `Failed to get shared "write" lock` (someone holds what we refuse to share),
// each followed by the hint `Is another process using the image [PATH]?` (Error.Hint).
//
// Request.For says which bits each host file gets (image, backing and external data files
// differ, as in QEMU); the table is in its comment and was checked against QEMU 7.2 with
// strace and with Others on files QEMU had open.
//
// # Why OFD locks, and whose descriptor holds them
//
// The locks are open file description (OFD) locks (F_OFD_SETLK), as QEMU uses. Unlike
// classic POSIX record locks they belong to one open file description, not to the process:
// closing some other descriptor of the same file (a format probe, a SEEK_HOLE helper) does not
// drop them, and two descriptions in one process conflict exactly as two processes do.
//
// The locks are taken on the very *os.File the image's I/O goes through: the engine's
// qcow2.FileStorage (internal/qcow2lock's Opener, via Request.LockAs) and the raw backends'
// own file. This package knows nothing of the engine: internal/qcow2lock maps the engine's
// file roles to the Kinds here. The locks then
// live exactly as long as the open image and go away with its Close, with nothing to keep in
// step. A separate descriptor held beside the Storage would work as well with OFD locks, but
// it needs a wrapper Storage that owns both, and a wrapper hides the optional interfaces
// (qcow2.HolePuncher, qcow2.Preallocator) the engine looks for on the Storage; so the Opener
// refuses a Storage that cannot give its file rather than going on unlocked. The one place a
// separate descriptor is used is image creation, where no Storage exists yet: the creator
// locks the existing file (if any) before anything truncates it, and holds that descriptor
// until the new image is written.
//
// # Scope
//
// Regular files and block devices are locked (QEMU locks both); for other files (character
// devices, FIFOs) Lock does nothing. A file system without OFD lock support fails Lock with
// `Failed to lock byte 100: ...`, as QEMU fails with locking=auto on such a file system.
// QEMU 6.1's extra GRAPH_MOD bit (bytes 104 and 204) is never touched, as QEMU 6.2 and later
// do not.
//
// # Concurrency
//
// Lock, Unlock and Others may run concurrently on different files. On one file, Lock and
// Unlock must not overlap each other (they change one set of locks); I/O on the file may go
// on meanwhile. There are no package-level locks.
//
// # Use
//
//	r := imagelock.Request{Perm: imagelock.ConsistentRead | imagelock.Write, Shared: imagelock.All}
//	err := r.LockAs(f, imagelock.RawImage, false)
//	var le *imagelock.Error
//	if errors.As(err, &le) {
//		fmt.Println(le.Error()) // Failed to get "write" lock
//		fmt.Println(le.Hint())  // Is another process using the image [disk.qcow2]?
//	}
package imagelock
