// A getopt_long work-alike: grouped short flags, attached or separate arguments, --opt=val
// and --opt val, unique prefixes of long names, operands anywhere (GNU permutation), "--".
package main

import (
	"fmt"
	"strings"
)

// optSpec is one option: a short letter, a long name, or both.
type optSpec struct {
	short byte
	long  string
	arg   bool // takes a required argument
}

// name is how errors and the parser's output refer to the option.
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

// getopt splits args into options and operands the way glibc's getopt_long does.
func getopt(specs []optSpec, args []string) ([]parsedOpt, []string, error) {
	var opts []parsedOpt
	var operands []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			return opts, append(operands, args[i+1:]...), nil
		case strings.HasPrefix(a, "--"):
			name, val, hasVal := strings.Cut(a[2:], "=")
			s, err := findLong(specs, name)
			if err != nil {
				return nil, nil, err
			}
			switch {
			case !s.arg && hasVal:
				return nil, nil, fmt.Errorf("option '--%s' doesn't allow an argument", s.long)
			case s.arg && !hasVal:
				if i+1 >= len(args) {
					return nil, nil, fmt.Errorf("option '--%s' requires an argument", s.long)
				}
				i++
				val = args[i]
			}
			opts = append(opts, parsedOpt{spec: s, val: val})
		case len(a) > 1 && a[0] == '-':
			for j := 1; j < len(a); j++ {
				s := findShort(specs, a[j])
				if s == nil {
					return nil, nil, fmt.Errorf("invalid option -- '%c'", a[j])
				}
				if !s.arg {
					opts = append(opts, parsedOpt{spec: s})
					continue
				}
				val := a[j+1:]
				if val == "" {
					if i+1 >= len(args) {
						return nil, nil, fmt.Errorf("option requires an argument -- '%c'", a[j])
					}
					i++
					val = args[i]
				}
				opts = append(opts, parsedOpt{spec: s, val: val})
				break
			}
		default:
			operands = append(operands, a)
		}
	}
	return opts, operands, nil
}

func findShort(specs []optSpec, c byte) *optSpec {
	for i := range specs {
		if specs[i].short == c {
			return &specs[i]
		}
	}
	return nil
}

// findLong resolves an exact long name or a unique prefix of one.
func findLong(specs []optSpec, name string) (*optSpec, error) {
	var matches []*optSpec
	for i := range specs {
		s := &specs[i]
		if s.long == "" {
			continue
		}
		if s.long == name {
			return s, nil
		}
		if name != "" && strings.HasPrefix(s.long, name) {
			matches = append(matches, s)
		}
	}
	switch len(matches) {
	case 0:
		return nil, fmt.Errorf("unrecognized option '--%s'", name)
	case 1:
		return matches[0], nil
	}
	names := make([]string, len(matches))
	for i, m := range matches {
		names[i] = "'--" + m.long + "'"
	}
	// glibc lists them in the table's order, which is qemu-nbd's.
	return nil, fmt.Errorf("option '--%s' is ambiguous; possibilities: %s", name, strings.Join(names, " "))
}
