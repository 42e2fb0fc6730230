// Package qemunum parses numbers and sizes exactly as QEMU 7.2 does (qemu_strtou64,
// qemu_strtosz), for the command-line values both binaries copy from QEMU: qnbd-img's -o
// sizes and qnbd's --image-opts cache sizes, offsets and lengths.
//
// # Contract
//
// Strtou64 is C's strtoull as QEMU calls it and reports how much of the string it used;
// ParseUint64 requires the whole string to be the number; Strtosz takes QEMU's size syntax
// (suffixes B, K, M, G, T, P, E of 1024, a decimal fraction with a suffix). Every parser
// fails with ErrInvalid or ErrRange (wrapped or not: compare with errors.Is), as QEMU's
// return -EINVAL and -ERANGE, so that callers print QEMU's message for each.
package qemunum
