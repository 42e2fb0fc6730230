// Package rawfile serves a raw image file or block device as a server.Backend, with TRIM
// (punch hole), WRITE_ZEROES (zero range / punch hole), BLOCK_STATUS (SEEK_DATA/SEEK_HOLE)
// and CACHE (fadvise WILLNEED).
//
// # Size and probed files
//
// The export is the file's length at Open rounded up to a 512-byte sector, the tail past the
// end of the file reading as zeros, as QEMU sizes raw images. A file opened with
// Options.Probed (its format was guessed, not given) is guarded: a change that would make its
// first 512 bytes probe as another format fails with EPERM (internal/probe), it asks for a
// 512-byte minimum block size, and a change reaching its partial last sector extends the file
// to the end of that sector, as QEMU's read-modify-write does (docs/probing.md).
//
// # Concurrency
//
// A File is safe for concurrent use: data goes through pread/pwrite (no shared file offset),
// and the lseek calls of Allocation only read their own return values. The only lock is a
// probed file's block-0 guard, held by changes that touch block 0.
//
// # Durability
//
// Writes land in the page cache; Flush is fdatasync. A FUA write, and every write with
// Options.WriteThrough, is followed by fdatasync before it returns. Options.IgnoreFlush
// (cache=unsafe) turns Flush and FUA into no-ops.
package rawfile
