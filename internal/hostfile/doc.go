// Package hostfile is the one layer between qnbd and a host file (an image file, an external
// data file, a backing file, a raw export): open, fdatasync, fallocate (punch hole, zero range,
// reserve), lseek SEEK_DATA/SEEK_HOLE and the allocated size. The qcow2 engine's FileStorage,
// the raw export (internal/rawfile) and qnbd-img's raw disk (internal/imgfmt) all go through
// it, so they share one error policy and one sync count.
//
// # Error policy (docs/hostfile.md)
//
//   - EINTR is retried, for every system call here.
//   - ENOTSUP/EOPNOTSUPP, ENOSYS, ENOTTY and ENODEV mean the file system cannot do the
//     operation: the call fails with an error matching ErrUnsupported (and the errno), and the
//     File remembers the refusal, so that later calls of the same fallocate mode fail at once
//     without a system call (QEMU's has_discard, has_write_zeroes, has_fallocate).
//   - ZeroRange also reports EINVAL as ErrUnsupported, without remembering it: some file
//     systems refuse an unaligned range only.
//   - SeekData past the last data is ErrNoMoreData (ENXIO); its other errors are returned,
//     and callers treat the range as data, as QEMU's block status does.
//   - Every other error is returned as an *os.PathError naming the operation and the file.
//
// # Sync count
//
// Every fdatasync through a File is counted (Syncs), and the flags the descriptor is open with
// can be read back (Flags), so a test can prove that no sync happens where none may and that
// no file is opened O_SYNC or O_DSYNC, whichever layer above asked for it.
//
// # Concurrency
//
// A File is safe for concurrent use; it holds no lock.
package hostfile
