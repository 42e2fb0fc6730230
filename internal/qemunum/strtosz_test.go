// Tests of QEMU's size and number parsing rules.
package qemunum

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
		{"16E", 0, ErrRange, false},
		{"18446744073709551615", math.MaxUint64, nil, false},
		{"18446744073709551616", 0, ErrRange, false},
		{"", 0, ErrInvalid, false},
		{"k", 0, ErrInvalid, false},
		{".5k", 0, ErrInvalid, false},
		{"-5", 0, ErrInvalid, false},
		{"1e3", 0, ErrInvalid, false},
		{"1.5e3k", 0, ErrInvalid, false},
		{"1KiB", 0, ErrInvalid, false},
		{"1k ", 0, ErrInvalid, false},
		{"1.0001", 0, ErrInvalid, false}, // a fraction needs a suffix
		{"0.5", 0, ErrInvalid, false},
		{"1.5b", 0, ErrInvalid, false},
		{"0x1.5k", 0, ErrInvalid, false},
		{"0x", 0, ErrInvalid, false},
		{"1Q", 0, ErrInvalid, false},
	}
	for _, tt := range tests {
		got, warn, err := Strtosz(tt.in)
		if err != tt.err || (err == nil && got != tt.want) || warn != tt.warnHex {
			t.Errorf("Strtosz(%q) = %d, %v, %v; want %d, %v, %v", tt.in, got, warn, err, tt.want, tt.warnHex, tt.err)
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
		{"16k", 0, 0, ErrInvalid},
		{"", 0, 0, ErrInvalid},
		{"99999999999999999999", 0, 0, ErrRange},
		{"-1", 0, math.MaxUint64, nil}, // strtoull negates modulo 2^64
	}
	for _, tt := range tests {
		got, err := ParseUint64(tt.in, tt.base)
		if err != tt.err || (err == nil && got != tt.want) {
			t.Errorf("ParseUint64(%q, %d) = %d, %v; want %d, %v", tt.in, tt.base, got, err, tt.want, tt.err)
		}
	}
}
