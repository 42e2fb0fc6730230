// The bridge from the option table to internal/getopt, which parses as glibc's getopt_long.
package main

import (
	"strings"

	"github.com/qnbd/qnbd/internal/getopt"
)

// optSpec is one option: a short letter, a long name, or both.
type optSpec struct {
	short byte
	long  string
	arg   bool // takes a required argument
}

// name is how parseArgs refers to the option.
func (s *optSpec) name() string {
	if s.long != "" {
		return s.long
	}
	return string(s.short)
}

// parsedOpt is one option occurrence, in command-line order.
type parsedOpt struct {
	spec *optSpec
	val  string
}

// longBase numbers long options in getopt's results: specs[i] is longBase+i.
const longBase = 256

// parseOptions splits args (without argv[0]) into options and operands as qemu-nbd's getopt_long
// call does; an error carries glibc's message.
func parseOptions(specs []optSpec, args []string) ([]parsedOpt, []string, error) {
	var short strings.Builder
	var long []getopt.Option
	for i, s := range specs {
		kind := getopt.NoArgument
		if s.arg {
			kind = getopt.RequiredArgument
		}
		if s.short != 0 {
			short.WriteByte(s.short)
			if s.arg {
				short.WriteByte(':')
			}
		}
		if s.long != "" {
			long = append(long, getopt.Option{Name: s.long, Arg: kind, Val: rune(longBase + i),
				Extra: i >= len(qemuSpecs)})
		}
	}
	p := getopt.New(append([]string{progName}, args...), short.String(), long)
	var opts []parsedOpt
	for c := p.Next(); c != getopt.End; c = p.Next() {
		switch {
		case c == getopt.Unknown || c == getopt.Missing:
			return nil, nil, p.Err()
		case c >= longBase:
			opts = append(opts, parsedOpt{spec: &specs[c-longBase], val: p.Arg})
		default:
			opts = append(opts, parsedOpt{spec: shortSpec(specs, byte(c)), val: p.Arg})
		}
	}
	return opts, p.Operands(), nil
}

func shortSpec(specs []optSpec, c byte) *optSpec {
	for i := range specs {
		if specs[i].short == c {
			return &specs[i]
		}
	}
	panic("getopt returned a letter that is not in the table")
}
