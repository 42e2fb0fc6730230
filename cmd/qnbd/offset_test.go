package main

import "testing"

// TestParseOffsetAsStrtoll checks -o values against what qemu-nbd 7.2 accepted and refused
// (measured: "0x100000", "010", " 5" accepted; "1k", "1_0", "0b1", "x" refused).
func TestParseOffsetAsStrtoll(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want uint64
		ok   bool
		neg  bool
	}{
		{"0", 0, true, false},
		{"1048576", 1048576, true, false},
		{"0x100000", 1 << 20, true, false},
		{"0X10", 16, true, false},
		{"010", 8, true, false},
		{" 5", 5, true, false},
		{"+7", 7, true, false},
		{"-5", 0, true, true},
		{"-0", 0, true, false},
		{"9223372036854775807", 1<<63 - 1, true, false},
		{"9223372036854775808", 0, false, false},
		{"1k", 0, false, false},
		{"1_0", 0, false, false},
		{"0b1", 0, false, false},
		{"08", 0, false, false},
		{"x", 0, false, false},
		{"", 0, false, false},
		{"0x", 0, false, false},
		{"5 ", 0, false, false},
	} {
		got, ok, err := parseOffset(tc.v)
		if ok != tc.ok || (err != nil) != tc.neg || (ok && !tc.neg && got != tc.want) {
			t.Errorf("parseOffset(%q) = %d, %v, %v; want %d, %v, negative %v", tc.v, got, ok, err, tc.want, tc.ok, tc.neg)
		}
	}
}
