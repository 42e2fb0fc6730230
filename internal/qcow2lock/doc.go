// Package qcow2lock is the qcow2 engine's Opener that takes QEMU's image locks
// (internal/imagelock) on every host file it opens: the image file, its backing files and its
// external data file. It is the only code that knows both the engine's file roles and the
// lock package's file kinds, so that neither of the two imports the other.
//
// # Contract
//
// Opener locks the very *os.File the Storage does its I/O on (FileHolder), so the locks live
// exactly as long as the Storage and go away with its Close. A Storage that cannot give its
// file is closed and refused, never used unlocked. A conflict is returned as the
// *imagelock.Error carrying QEMU's message.
//
// # Use
//
//	img, err := qcow2.Open(path, qcow2.OpenOptions{
//		Opener: qcow2lock.Opener(imagelock.Request{
//			Perm: imagelock.ConsistentRead | imagelock.Write, Shared: imagelock.All}, nil),
//	})
package qcow2lock
