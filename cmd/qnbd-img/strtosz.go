// Size and number parsing exactly as QEMU 7.2 does it, from internal/qemunum, under the names
// the subcommands use.
package main

import "github.com/qnbd/qnbd/internal/qemunum"

// errRange is ERANGE from QEMU's parsers (qemunum.ErrInvalid is their EINVAL).
var errRange = qemunum.ErrRange

// strtou64 is C's strtoull as qemu_strtou64 uses it (qemunum.Strtou64).
func strtou64(s string, base int) (uint64, int, error) { return qemunum.Strtou64(s, base) }

// qemuStrtou64 is qemu_strtou64 with no end pointer (qemunum.ParseUint64).
func qemuStrtou64(s string, base int) (uint64, error) { return qemunum.ParseUint64(s, base) }

// strtosz is qemu_strtosz (qemunum.Strtosz).
func strtosz(s string) (uint64, bool, error) { return qemunum.Strtosz(s) }
