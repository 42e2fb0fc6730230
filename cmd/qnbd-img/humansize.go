// Human-readable sizes as QEMU prints them (size_to_str).
package main

import (
	"math"
	"strconv"
)

// sizeToStr is QEMU's size_to_str: three significant digits ("%0.3g") and a binary suffix,
// switching to the next suffix once the value reaches 1000 of the current one.
func sizeToStr(v uint64) string {
	suffixes := []string{"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}
	_, exp := math.Frexp(float64(v) / (1000.0 / 1024.0))
	i := (exp - 1) / 10 // C integer division truncates toward zero, as Go's does
	if i < 0 {
		i = 0
	}
	if i >= len(suffixes) {
		i = len(suffixes) - 1
	}
	div := float64(uint64(1) << (uint(i) * 10))
	return cG3(float64(v)/div) + " " + suffixes[i] + "B"
}

// cG3 formats like C's "%0.3g".
func cG3(f float64) string {
	return strconv.FormatFloat(f, 'g', 3, 64)
}
