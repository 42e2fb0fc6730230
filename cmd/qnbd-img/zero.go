// Finding zeros in buffers quickly.
package main

import "bytes"

// zeroBlock is a block of zeros to compare buffers against (memcmp speed).
var zeroBlock = make([]byte, 64<<10)

// isZero reports whether b holds only zero bytes.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// firstNonZero returns the index of the first non-zero byte of b, or -1.
func firstNonZero(b []byte) int {
	for i := 0; i < len(b); {
		n := min(len(b)-i, len(zeroBlock))
		if !bytes.Equal(b[i:i+n], zeroBlock[:n]) {
			for j := i; j < i+n; j++ {
				if b[j] != 0 {
					return j
				}
			}
		}
		i += n
	}
	return -1
}
