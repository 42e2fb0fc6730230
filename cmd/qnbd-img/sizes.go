// Size arguments on the command line (cvtnum) with qemu-img's messages.
package main

import "math"

// cvtnum is qemu-img's cvtnum: a size in [0, INT64_MAX], with its error messages.
func (a *app) cvtnum(name, value string) (int64, bool) {
	return a.cvtnumFull(name, value, 0, math.MaxInt64)
}

// cvtnumFull is cvtnum_full.
func (a *app) cvtnumFull(name, value string, lo, hi int64) (int64, bool) {
	v, warnHex, err := strtosz(value)
	if err != nil && err != errRange {
		a.errorf("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", name)
		a.errorf("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
		return 0, false
	}
	if warnHex {
		a.warnf("Using a multiplier suffix on hex numbers is deprecated: %s", value)
	}
	if err == errRange || v > uint64(hi) || int64(v) < lo {
		a.errorf("Invalid %s specified. Must be between %d and %d.", name, lo, hi)
		return 0, false
	}
	return int64(v), true
}
