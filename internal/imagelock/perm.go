// The on-disk lock layout QEMU uses: permission bits and the byte offsets that stand for them.
package imagelock

import "strings"

// Perm is a set of QEMU block-layer permissions (include/block/block-common.h, the
// BLK_PERM_* enum). A program "takes" the permissions it needs on an image and "shares" the
// ones it lets other programs take at the same time.
type Perm uint64

// The permission bits, as numbered by QEMU; bit i is locked at PermByteBase+i and
// SharedByteBase+i.
const (
	// ConsistentRead (BLK_PERM_CONSISTENT_READ, 0x01): the holder's view of the contents is
	// complete and self-consistent.
	ConsistentRead Perm = 0x01
	// Write (BLK_PERM_WRITE, 0x02): the holder changes the visible contents.
	Write Perm = 0x02
	// WriteUnchanged (BLK_PERM_WRITE_UNCHANGED, 0x04): the holder writes without changing
	// what a reader sees.
	WriteUnchanged Perm = 0x04
	// Resize (BLK_PERM_RESIZE, 0x08): the holder changes the size of the file.
	Resize Perm = 0x08
	// All is every permission QEMU 6.2 and later lock (BLK_PERM_ALL, 0x0f).
	All Perm = 0x0f
)

// QEMU 6.1 and earlier also had BLK_PERM_GRAPH_MOD (0x10), locked at bytes 104 and 204.
// QEMU 6.2 and later never touch those bytes and neither does this package: a permission no
// longer checked by anyone cannot conflict.

// Byte offsets of the locks (block/file-posix.c). Bytes below 100 are left to libvirt, which
// takes byte 0.
const (
	// PermByteBase is RAW_LOCK_PERM_BASE: a shared (read) lock on PermByteBase+i means
	// "I hold permission bit i".
	PermByteBase = 100
	// SharedByteBase is RAW_LOCK_SHARED_BASE: a shared (read) lock on SharedByteBase+i means
	// "I do not share permission bit i".
	SharedByteBase = 200
)

// numPerms is the number of permission bits in All.
const numPerms = 4

// permNames are bdrv_perm_names' words for each bit, in bit order.
var permNames = [numPerms]string{"consistent read", "write", "write unchanged", "resize"}

// String lists the permissions in p as QEMU names them, comma separated ("write, resize"),
// or "" for none.
func (p Perm) String() string {
	var names []string
	for i := range numPerms {
		if p&(1<<i) != 0 {
			names = append(names, permNames[i])
		}
	}
	return strings.Join(names, ", ")
}

// bits calls fn for each permission bit in p, lowest first.
func (p Perm) bits(fn func(i int, bit Perm) error) error {
	for i := range numPerms {
		if bit := Perm(1) << i; p&bit != 0 {
			if err := fn(i, bit); err != nil {
				return err
			}
		}
	}
	return nil
}
