// Size and number parsing exactly as QEMU 7.2 does it (qemu_strtosz, qemu_strtou64).
package qemunum

import (
	"errors"
	"math"
	"math/bits"
	"strconv"
	"strings"
)

var (
	ErrInvalid = errors.New("invalid")      // EINVAL from QEMU's parsers
	ErrRange   = errors.New("out of range") // ERANGE
)

// isCSpace is C's isspace in the "C" locale.
func isCSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func digitVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	}
	return 99
}

// Strtou64 is C's strtoull as qemu_strtou64 uses it: leading white space, an optional sign
// (a minus negates modulo 2^64), base 0 (auto: 0x hex, 0 octal, decimal), 10 or 16 (with an
// optional 0x prefix). It returns the value, the number of bytes consumed (0 when there is no
// number) and ErrRange on overflow, which consumes all the digits.
func Strtou64(s string, base int) (uint64, int, error) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		neg = s[i] == '-'
		i++
	}
	hasHexPrefix := i+1 < len(s) && s[i] == '0' && (s[i+1] == 'x' || s[i+1] == 'X') &&
		i+2 < len(s) && digitVal(s[i+2]) < 16
	switch {
	case base == 0 && hasHexPrefix:
		base = 16
		i += 2
	case base == 0 && i < len(s) && s[i] == '0':
		base = 8
	case base == 0:
		base = 10
	case base == 16 && hasHexPrefix:
		i += 2
	}
	start := i
	var v uint64
	overflow := false
	for i < len(s) && digitVal(s[i]) < base {
		hi, lo := bits.Mul64(v, uint64(base))
		lo, carry := bits.Add64(lo, uint64(digitVal(s[i])), 0)
		if hi != 0 || carry != 0 {
			overflow = true
		}
		v = lo
		i++
	}
	if i == start {
		return 0, 0, ErrInvalid
	}
	if overflow {
		return math.MaxUint64, i, ErrRange
	}
	if neg {
		v = -v
	}
	return v, i, nil
}

// ParseUint64 is qemu_strtou64 with no end pointer: the whole string must be the number.
func ParseUint64(s string, base int) (uint64, error) {
	v, n, err := Strtou64(s, base)
	if err != nil {
		return 0, err
	}
	if n != len(s) {
		return 0, ErrInvalid
	}
	return v, nil
}

// suffixMul is QEMU's suffix_mul with unit 1024: B, K, M, G, T, P, E in either case.
func suffixMul(c byte) uint64 {
	switch c {
	case 'b', 'B':
		return 1
	case 'k', 'K':
		return 1 << 10
	case 'm', 'M':
		return 1 << 20
	case 'g', 'G':
		return 1 << 30
	case 't', 'T':
		return 1 << 40
	case 'p', 'P':
		return 1 << 50
	case 'e', 'E':
		return 1 << 60
	}
	return 0
}

// Strtosz is qemu_strtosz from QEMU 7.2: an integer (decimal, or hex with 0x), an optional
// fraction (decimal only, no exponent, and only together with a suffix), an optional suffix
// B/K/M/G/T/P/E (powers of 1024), rounding the result to the nearest byte. warnHex is set
// when a hex number carries a suffix (deprecated, but accepted by 7.2).
func Strtosz(s string) (v uint64, warnHex bool, err error) {
	val, n, err := Strtou64(s, 10)
	if err != nil {
		return 0, false, err
	}
	if strings.ContainsRune(s[:n], '-') {
		return 0, false, ErrInvalid
	}
	rest := s[n:]
	var frac float64
	hex := false
	if val == 0 && rest != "" && (rest[0] == 'x' || rest[0] == 'X') {
		val, n, err = Strtou64(s, 16)
		if err != nil {
			return 0, false, err
		}
		rest = s[n:]
		if rest != "" && rest[0] == '.' {
			return 0, false, ErrInvalid
		}
		hex = true
	} else if rest != "" && rest[0] == '.' {
		f, used, ok := strtodFraction(rest)
		switch {
		case !ok:
			rest = rest[1:] // "1." or "1.k": no fractional digits
		case strings.ContainsAny(rest[:used], "eE"):
			return 0, false, ErrInvalid
		default:
			frac = f
			rest = rest[used:]
		}
	}
	mul := uint64(1)
	if rest != "" {
		if m := suffixMul(rest[0]); m != 0 {
			mul = m
			rest = rest[1:]
			warnHex = hex
		}
	}
	if rest != "" {
		return 0, false, ErrInvalid
	}
	valf := uint64(0)
	if frac > 0 {
		valf = uint64(min(frac*0x1p64, 0x1p64-1))
	}
	if mul == 1 {
		if valf != 0 {
			return 0, false, ErrInvalid
		}
		return val, warnHex, nil
	}
	// 64.64 fixed point times the multiplier, rounding half up.
	hi, lo := bits.Mul64(val, mul)
	fhi, _ := bits.Mul64(valf, mul)
	flo := valf * mul
	lo, c := bits.Add64(lo, fhi, 0)
	hi += c
	lo, c = bits.Add64(lo, flo>>63, 0)
	hi += c
	if hi != 0 {
		return 0, false, ErrRange
	}
	return lo, warnHex, nil
}

// strtodFraction parses what C's strtod accepts at the start of s, which begins with '.':
// digits, then an optional exponent. ok is false when no digit follows the dot.
func strtodFraction(s string) (f float64, used int, ok bool) {
	i := 1
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 1 {
		return 0, 0, false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		j := i + 1
		if j < len(s) && (s[j] == '+' || s[j] == '-') {
			j++
		}
		k := j
		for k < len(s) && s[k] >= '0' && s[k] <= '9' {
			k++
		}
		if k > j {
			i = k
		}
	}
	f, err := strconv.ParseFloat("0"+s[:i], 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, i, false
	}
	return f, i, true
}
