// -o/--offset: qemu-nbd's parsing of the value and the window over the opened image
// (internal/offsetexport).
package main

import (
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/qnbd/qnbd/internal/offsetexport"
	"github.com/qnbd/qnbd/server"
)

// errNegativeOffset is what QEMU's raw driver says of a negative offset (qemu-nbd passes the
// value on unchecked), three lines as QEMU prints them.
var errNegativeOffset error = messageError("Parameter 'offset' expects a non-negative number below 2^64\n" +
	"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n" +
	"and exabytes, respectively.")

// messageError is an error printed exactly as QEMU words it (capital first letter, no hint to
// try --help).
type messageError string

func (e messageError) Error() string { return string(e) }

// invalidOffset is qemu-nbd's complaint about a value that is not a number.
func invalidOffset(v string) error { return messageError(fmt.Sprintf("Invalid offset '%s'", v)) }

// parseOffset reads -o as qemu-nbd does (C's strtoll in base 0: leading blanks, a sign, 0x
// for hex, a leading 0 for octal; nothing after the digits): ok is false when the value is
// not a number, err set when it is negative.
func parseOffset(v string) (off uint64, ok bool, err error) {
	s := strings.TrimLeft(v, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg = s[0] == '-'
		s = s[1:]
	}
	base := uint64(10)
	switch {
	case len(s) > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'):
		base, s = 16, s[2:]
	case len(s) > 1 && s[0] == '0':
		base, s = 8, s[1:]
	}
	if s == "" {
		return 0, false, nil
	}
	var n uint64
	for _, c := range s {
		d := uint64(base)
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		}
		if d >= base || n > (math.MaxInt64-d)/base {
			return 0, false, nil // not a digit, or out of int64's range (ERANGE)
		}
		n = n*base + d
	}
	if neg && n > 0 {
		return 0, true, errNegativeOffset
	}
	return n, true, nil
}

// openExport opens e's backend and applies its -o offset above the format, as qemu-nbd does.
func openExport(e exportConfig, cfg *config, env openEnv) (server.Backend, io.Closer, error) {
	open := openBackend
	if e.imageOpts {
		var err error
		if e, cfg, err = applyImageOpts(e, cfg, env.stderr); err != nil {
			return nil, nil, err
		}
		open = openImageOptsExport
	}
	b, c, err := open(e, cfg, env)
	if err == nil {
		if err = checkBitmaps(e, b); err != nil {
			c.Close()
			return nil, nil, err
		}
	}
	if err != nil || e.offset == 0 {
		return b, c, err
	}
	w, err := offsetexport.New(b, e.offset)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	return w, c, nil
}
