// --image-opts: the FILE operand as a QEMU option string (driver=qcow2,file.filename=F,...),
// split as QemuOpts splits qemu-nbd's (docs/image-opts.md).
package main

import (
	"fmt"
	"io"
	"strings"
)

// optPair is one key=value of an option string, in the order given.
type optPair struct{ key, value string }

// splitImageOpts parses an option string as qemu_opts_parse does with "file" as the implied
// name: "k=v" pairs split at single commas, ",," a literal comma in a value; a first element
// without '=' is file=ELEMENT; a later one is a short-form boolean ("k" is k=on, "nok"
// k=off), which QEMU 7.2 accepts with the warning it prints to warn.
func splitImageOpts(s string, warn io.Writer) []optPair {
	var pairs []optPair
	for first := true; s != ""; first = false {
		n := strings.IndexAny(s, "=,")
		switch {
		case n >= 0 && s[n] == '=':
			key := s[:n]
			var v string
			v, s = optValue(s[n+1:])
			pairs = append(pairs, optPair{key, v})
		case first:
			var v string
			v, s = optValue(s)
			pairs = append(pairs, optPair{"file", v})
		default:
			elem := s
			if n >= 0 {
				elem, s = s[:n], s[n+1:]
			} else {
				s = ""
			}
			key, value := elem, "on"
			if k, ok := strings.CutPrefix(elem, "no"); ok {
				key, value = k, "off"
			}
			fmt.Fprintf(warn, "%s: warning: short-form boolean option '%s' deprecated\nPlease use %s=%s instead\n",
				progName, elem, key, value)
			pairs = append(pairs, optPair{key, value})
		}
	}
	return pairs
}

// optValue reads a value up to the next single comma (",," is a comma) and returns it with
// what follows that comma.
func optValue(s string) (value, rest string) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != ',' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == ',' {
			b.WriteByte(',')
			i++
			continue
		}
		return b.String(), s[i+1:]
	}
	return b.String(), ""
}

// lastValues keeps the last value of each key, as QEMU does when it turns the list into a
// dictionary, and the keys in the order of their first appearance.
func lastValues(pairs []optPair) (vals map[string]string, order []string) {
	vals = map[string]string{}
	for _, p := range pairs {
		if _, seen := vals[p.key]; !seen {
			order = append(order, p.key)
		}
		vals[p.key] = p.value
	}
	return vals, order
}
