// Taking, dropping and probing the lock bytes of one open file (fcntl F_OFD_SETLK/GETLK).
package imagelock

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Lock takes QEMU's locks for holding perm and sharing shared on f, then checks that no
// other open file description holds a lock in the way, in QEMU's order (raw_apply_lock_bytes
// then raw_check_lock_bytes):
//
//  1. a shared lock on byte PermByteBase+i for each bit i of perm, and on byte
//     SharedByteBase+i for each bit i not in shared;
//  2. for each bit i of perm, nobody else may hold byte SharedByteBase+i (they refuse to
//     share it), else *Error{Perm: bit};
//  3. for each bit i not in shared, nobody else may hold byte PermByteBase+i (they hold it),
//     else *Error{Perm: bit, Shared: true}.
//
// Taking the locks before checking closes the race between two openers: of two processes
// starting at once, at least one sees the other's bytes.
//
// On failure every lock byte of f is released. f must hold no locks from an earlier Lock:
// Lock is for a freshly opened file. Files that are neither regular files nor block devices
// are not locked (nil). The locks last until Unlock or until the last descriptor of f's open
// file description is closed (f.Close).
func Lock(f *os.File, perm, shared Perm) error {
	perm &= All
	unshared := All &^ shared
	if ok, err := lockable(f); err != nil || !ok {
		return err
	}
	return control(f, func(fd uintptr) error {
		err := apply(fd, f.Name(), perm, unshared)
		if err == nil {
			err = check(fd, f.Name(), perm, unshared)
		}
		if err != nil {
			if uerr := setlk(fd, unix.F_UNLCK, PermByteBase, SharedByteBase+numPerms-PermByteBase); uerr != nil {
				return errors.Join(err, fmt.Errorf("imagelock: releasing locks on %s: %w", f.Name(), uerr))
			}
		}
		return err
	})
}

// apply takes the shared locks.
func apply(fd uintptr, path string, perm, unshared Perm) error {
	take := func(base int) func(int, Perm) error {
		return func(i int, _ Perm) error {
			if err := setlk(fd, unix.F_RDLCK, base+i, 1); err != nil {
				return &Error{Path: path, Byte: base + i, Err: err}
			}
			return nil
		}
	}
	if err := perm.bits(take(PermByteBase)); err != nil {
		return err
	}
	return unshared.bits(take(SharedByteBase))
}

// check looks for other descriptions' locks in the way.
func check(fd uintptr, path string, perm, unshared Perm) error {
	err := perm.bits(func(i int, bit Perm) error {
		taken, err := heldByOthers(fd, SharedByteBase+i)
		if err != nil {
			return &Error{Path: path, Byte: SharedByteBase + i, Err: err}
		}
		if taken {
			return &Error{Path: path, Perm: bit}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return unshared.bits(func(i int, bit Perm) error {
		taken, err := heldByOthers(fd, PermByteBase+i)
		if err != nil {
			return &Error{Path: path, Byte: PermByteBase + i, Err: err}
		}
		if taken {
			return &Error{Path: path, Perm: bit, Shared: true}
		}
		return nil
	})
}

// Unlock releases every lock byte Lock may have taken on f.
func Unlock(f *os.File) error {
	if ok, err := lockable(f); err != nil || !ok {
		return err
	}
	return control(f, func(fd uintptr) error {
		return setlk(fd, unix.F_UNLCK, PermByteBase, SharedByteBase+numPerms-PermByteBase)
	})
}

// Others reports what other open file descriptions (of this or any process) hold on f's
// file: held are the permissions someone holds, notShared those someone refuses to share.
// It changes nothing. It is what a diagnostic ("who is using this image?") or a test needs.
func Others(f *os.File) (held, notShared Perm, err error) {
	if ok, err := lockable(f); err != nil || !ok {
		return 0, 0, err
	}
	err = control(f, func(fd uintptr) error {
		return All.bits(func(i int, bit Perm) error {
			h, err := heldByOthers(fd, PermByteBase+i)
			if err != nil {
				return err
			}
			if h {
				held |= bit
			}
			n, err := heldByOthers(fd, SharedByteBase+i)
			if err != nil {
				return err
			}
			if n {
				notShared |= bit
			}
			return nil
		})
	})
	return held, notShared, err
}

// lockable reports whether f is a file QEMU would lock: a regular file or a block device.
func lockable(f *os.File) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("imagelock: %w", err)
	}
	m := fi.Mode()
	return m.IsRegular() || (m&os.ModeDevice != 0 && m&os.ModeCharDevice == 0), nil
}

// control runs fn with f's descriptor (without File.Fd's switch to blocking mode).
func control(f *os.File, fn func(fd uintptr) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("imagelock: %w", err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(fd) }); err != nil {
		return fmt.Errorf("imagelock: %w", err)
	}
	return ferr
}

// setlk sets (F_RDLCK) or clears (F_UNLCK) an OFD lock on [start, start+n).
func setlk(fd uintptr, typ int16, start, n int) error {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: int64(start), Len: int64(n)}
	for {
		err := unix.FcntlFlock(fd, unix.F_OFD_SETLK, &lk)
		if err != unix.EINTR {
			return err
		}
	}
}

// heldByOthers asks whether a write lock on byte off would conflict, that is whether another
// open file description holds any lock on it (qemu_lock_fd_test with exclusive=true).
// Locks of fd's own description never conflict with it.
func heldByOthers(fd uintptr, off int) (bool, error) {
	for {
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: int64(off), Len: 1}
		err := unix.FcntlFlock(fd, unix.F_OFD_GETLK, &lk)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, err
		}
		return lk.Type != unix.F_UNLCK, nil
	}
}
