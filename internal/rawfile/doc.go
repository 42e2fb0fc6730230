// Package rawfile serves a raw image file or block device as a server.Backend, with TRIM
// (punch hole), WRITE_ZEROES (zero range / punch hole), BLOCK_STATUS (SEEK_DATA/SEEK_HOLE)
// and CACHE (fadvise WILLNEED).
//
// # Concurrency
//
// A File is safe for concurrent use: data goes through pread/pwrite (no shared file offset),
// and the lseek calls of Allocation only read their own return values. There are no locks.
//
// # Durability
//
// Writes land in the page cache; Flush is fdatasync. A FUA write, and every write with
// Options.WriteThrough, is followed by fdatasync before it returns. Options.IgnoreFlush
// (cache=unsafe) turns Flush and FUA into no-ops.
package rawfile
