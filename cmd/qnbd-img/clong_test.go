// Tests of qemu_strtol as convert -m uses it.
package main

import "testing"

func TestParseCLong(t *testing.T) {
	for in, want := range map[string]int64{"8": 8, "0x10": 16, "-3": -3, "010": 8} {
		if got, ok := parseCLong(in); !ok || got != want {
			t.Errorf("parseCLong(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "8x", "9223372036854775808", "abc"} {
		if _, ok := parseCLong(in); ok {
			t.Errorf("parseCLong(%q) accepted", in)
		}
	}
}
