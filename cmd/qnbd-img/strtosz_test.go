// Tests of QEMU's size and number parsing rules.
package main

import (
	"math"
	"testing"
)

func TestStrtosz(t *testing.T) {
	tests := []struct {
		in      string
		want    uint64
		err     error
		warnHex bool
	}{
		{"0", 0, nil, false},
		{"512", 512, nil, false},
		{"1k", 1024, nil, false},
		{"1K", 1024, nil, false},
		{"12K", 12288, nil, false},
		{"1M", 1 << 20, nil, false},
		{"1m", 1 << 20, nil, false},
		{"1G", 1 << 30, nil, false},
		{"1T", 1 << 40, nil, false},
		{"1P", 1 << 50, nil, false},
		{"1E", 1 << 60, nil, false},
		{"1b", 1, nil, false},
		{"1B", 1, nil, false},
		{"1.5M", 1572864, nil, false},
		{"1.1k", 1126, nil, false}, // 1126.4 rounds down
		{"0.0005k", 1, nil, false}, // 0.512 rounds half up
		{"0.0004k", 0, nil, false},
		{"1.", 1, nil, false},
		{"1.k", 1024, nil, false},
		{"1.0", 1, nil, false},
		{"4294967295.999999k", 4398046511104, nil, false},
		{" 12", 12, nil, false},
		{"+5", 5, nil, false},
		{"0x100", 256, nil, false},
		{"0X10", 16, nil, false},
		{" 0x10", 16, nil, false},
		{"0x1b", 27, nil, false}, // b is a hex digit here
		{"0x1k", 1024, nil, true},
		{"1.5e", 1729382256910270464, nil, false}, // "e" is the exabyte suffix, not an exponent
		{"15E", 15 << 60, nil, false},
		{"16E", 0, errRange, false},
		{"18446744073709551615", math.MaxUint64, nil, false},
		{"18446744073709551616", 0, errRange, false},
		{"", 0, errInvalid, false},
		{"k", 0, errInvalid, false},
		{".5k", 0, errInvalid, false},
		{"-5", 0, errInvalid, false},
		{"1e3", 0, errInvalid, false},
		{"1.5e3k", 0, errInvalid, false},
		{"1KiB", 0, errInvalid, false},
		{"1k ", 0, errInvalid, false},
		{"1.0001", 0, errInvalid, false}, // a fraction needs a suffix
		{"0.5", 0, errInvalid, false},
		{"1.5b", 0, errInvalid, false},
		{"0x1.5k", 0, errInvalid, false},
		{"0x", 0, errInvalid, false},
		{"1Q", 0, errInvalid, false},
	}
	for _, tt := range tests {
		got, warn, err := strtosz(tt.in)
		if err != tt.err || (err == nil && got != tt.want) || warn != tt.warnHex {
			t.Errorf("strtosz(%q) = %d, %v, %v; want %d, %v, %v", tt.in, got, warn, err, tt.want, tt.warnHex, tt.err)
		}
	}
}

func TestStrtou64(t *testing.T) {
	tests := []struct {
		in   string
		base int
		want uint64
		err  error
	}{
		{"16", 0, 16, nil},
		{"0x10", 0, 16, nil},
		{"016", 0, 14, nil}, // octal, as C's strtoull with base 0
		{" 16", 0, 16, nil},
		{"16k", 0, 0, errInvalid},
		{"", 0, 0, errInvalid},
		{"99999999999999999999", 0, 0, errRange},
		{"-1", 0, math.MaxUint64, nil}, // strtoull negates modulo 2^64
	}
	for _, tt := range tests {
		got, err := qemuStrtou64(tt.in, tt.base)
		if err != tt.err || (err == nil && got != tt.want) {
			t.Errorf("qemuStrtou64(%q, %d) = %d, %v; want %d, %v", tt.in, tt.base, got, err, tt.want, tt.err)
		}
	}
}

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
