// -o option lists, parsed, validated and printed as QEMU's QemuOpts does it.
package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// optType is the type of a creation option, as QemuOpts types them.
type optType int

const (
	optString optType = iota
	optBool
	optNumber
	optSize
)

func (t optType) String() string {
	switch t {
	case optBool:
		return "bool (on/off)"
	case optNumber:
		return "num"
	case optSize:
		return "size"
	}
	return "str"
}

// optDesc describes one creation option.
type optDesc struct {
	name string
	typ  optType
	help string
	def  string // printed in the "Formatting" line when the option is not set; "" = not printed
}

// Creation options qnbd-img implements, in the order QEMU 7.2 prints them in its "Formatting"
// line. The help texts are QEMU's.
var (
	optSizeDesc    = optDesc{name: "size", typ: optSize, help: "Virtual disk size"}
	qcow2OptsDescs = []optDesc{
		{name: "cluster_size", typ: optSize, help: "qcow2 cluster size", def: "65536"},
		{name: "extended_l2", typ: optBool, help: "Extended L2 tables", def: "off"},
		{name: "preallocation", typ: optString, help: "Preallocation mode (allowed values: off, metadata, falloc, full)"},
		{name: "compression_type", typ: optString, help: "Compression method used for image cluster compression", def: "zlib"},
		optSizeDesc,
		{name: "compat", typ: optString, help: "Compatibility level (v2 [0.10] or v3 [1.1])"},
		{name: "backing_file", typ: optString, help: "File name of a base image"},
		{name: "backing_fmt", typ: optString, help: "Image format of the base image"},
		{name: "data_file", typ: optString, help: "File name of an external data file"},
		{name: "data_file_raw", typ: optBool, help: "The external data file must stay valid as a raw image"},
		{name: "lazy_refcounts", typ: optBool, help: "Postpone refcount updates", def: "off"},
		{name: "refcount_bits", typ: optNumber, help: "Width of a reference count entry in bits", def: "16"},
	}
	rawOptsDescs = []optDesc{optSizeDesc}
	// fileOptsDescs are the protocol-level (host file) options, appended when the target
	// file name is known.
	fileOptsDescs = []optDesc{
		{name: "preallocation", typ: optString, help: "Preallocation mode (allowed values: off, falloc, full)"},
		optSizeDesc,
	}
)

// optList is a set of option descriptors merged in order, first occurrence winning.
type optList []optDesc

func mergeOpts(lists ...[]optDesc) optList {
	var out optList
	seen := map[string]bool{}
	for _, l := range lists {
		for _, d := range l {
			if !seen[d.name] {
				seen[d.name] = true
				out = append(out, d)
			}
		}
	}
	return out
}

func (l optList) find(name string) *optDesc {
	for i := range l {
		if l[i].name == name {
			return &l[i]
		}
	}
	return nil
}

// optValue is a set option: the string given and, for numbers and sizes, its value.
type optValue struct {
	str string
	num uint64
}

// qemuOpts holds parsed option values.
type qemuOpts struct {
	list optList
	vals map[string]optValue
	// warn prints a warning (deprecated syntax); nil discards it.
	warn func(format string, args ...any)
}

func newQemuOpts(list optList, warn func(format string, args ...any)) *qemuOpts {
	return &qemuOpts{list: list, vals: map[string]optValue{}, warn: warn}
}

// validOptionList is is_valid_option_list: an -o argument that can be joined to others with
// a comma (not empty, not starting with a comma, not ending in an odd number of commas).
func validOptionList(s string) bool {
	if s == "" || s[0] == ',' {
		return false
	}
	trailing := len(s) - len(strings.TrimRight(s, ","))
	return trailing%2 == 0
}

// getOptValue reads a value up to the next single comma, ",," standing for a comma; it returns
// the value and the rest after the separating comma.
func getOptValue(s string) (value, rest string) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				b.WriteByte(',')
				i++
				continue
			}
			return b.String(), s[i+1:]
		}
		b.WriteByte(s[i])
	}
	return b.String(), ""
}

func isHelpOption(s string) bool { return s == "?" || s == "help" }

// hasHelpOption reports whether an option list asks for help ("help" or "?" as an element).
func hasHelpOption(s string) bool {
	for s != "" {
		var v string
		v, s = getOptValue(s)
		if isHelpOption(v) {
			return true
		}
	}
	return false
}

// parse applies an option list ("k=v,k2=v2", ",," escaping a comma; a bare "k" means k=on and
// "nok" k=off). Errors carry QEMU's messages.
func (o *qemuOpts) parse(s string) error {
	for s != "" {
		n := strings.IndexAny(s, "=,")
		var name, value string
		if n < 0 || s[n] == ',' {
			if n < 0 {
				n = len(s)
			}
			name = s[:n]
			s = strings.TrimPrefix(s[n:], ",")
			if strings.HasPrefix(name, "no") {
				name, value = name[2:], "off"
			} else {
				value = "on"
			}
		} else {
			name = s[:n]
			value, s = getOptValue(s[n+1:])
		}
		if err := o.set(name, value); err != nil {
			return err
		}
	}
	return nil
}

// set parses and stores one option value.
func (o *qemuOpts) set(name, value string) error {
	d := o.list.find(name)
	if d == nil {
		return qemuErrorf("Invalid parameter '%s'", name)
	}
	v := optValue{str: value}
	switch d.typ {
	case optBool:
		if _, ok := parseBool(value); !ok {
			return qemuErrorf("Parameter '%s' expects 'on' or 'off'", name)
		}
	case optNumber:
		n, err := qemuStrtou64(value, 0)
		if err == errRange {
			return qemuErrorf("Value '%s' out of range for parameter '%s'", value, name)
		}
		if err != nil {
			return qemuErrorf("Parameter '%s' expects a number", name)
		}
		v.num = n
	case optSize:
		n, warnHex, err := parseOptionSize(name, value)
		if err != nil {
			return err
		}
		if warnHex && o.warn != nil {
			o.warn("Using a multiplier suffix on hex numbers is deprecated: %s", value)
		}
		v.num = n
	}
	o.vals[name] = v
	return nil
}

// parseOptionSize is parse_option_size: qemu_strtosz with QemuOpts' messages. warnHex asks
// the caller to print QEMU's deprecation warning for a suffixed hex number.
func parseOptionSize(name, value string) (n uint64, warnHex bool, err error) {
	n, warnHex, err = strtosz(value)
	if err == errRange {
		return 0, false, qemuErrorf("Value '%s' is out of range for parameter '%s'", value, name)
	}
	if err != nil {
		return 0, false, qemuErrorf("Parameter '%s' expects a non-negative number below 2^64\n"+
			"Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"+
			"and exabytes, respectively.", name)
	}
	return n, warnHex, nil
}

// parseBool is qapi_bool_parse.
func parseBool(s string) (v, ok bool) {
	switch s {
	case "on", "yes", "true", "y":
		return true, true
	case "off", "no", "false", "n":
		return false, true
	}
	return false, false
}

func (o *qemuOpts) has(name string) bool { _, ok := o.vals[name]; return ok }
func (o *qemuOpts) str(name string) string {
	return o.vals[name].str
}
func (o *qemuOpts) num(name string) uint64 { return o.vals[name].num }
func (o *qemuOpts) boolean(name string) bool {
	v, _ := parseBool(o.vals[name].str)
	return o.has(name) && v
}

// setNumber sets a size or number option from a value (qemu_opt_set_number).
func (o *qemuOpts) setNumber(name string, n uint64) {
	o.vals[name] = optValue{str: strconv.FormatUint(n, 10), num: n}
}

// setString sets a string option.
func (o *qemuOpts) setString(name, s string) { o.vals[name] = optValue{str: s} }

// print is qemu_opts_print with a space separator: every option that is set or has a default,
// in descriptor order; strings with commas doubled, numbers and sizes as signed decimals.
func (o *qemuOpts) print() string {
	var parts []string
	for _, d := range o.list {
		v, set := o.vals[d.name]
		switch {
		case set && d.typ == optString:
			parts = append(parts, d.name+"="+strings.ReplaceAll(v.str, ",", ",,"))
		case set && (d.typ == optNumber || d.typ == optSize):
			parts = append(parts, fmt.Sprintf("%s=%d", d.name, int64(v.num)))
		case set:
			parts = append(parts, d.name+"="+v.str)
		case d.def != "":
			parts = append(parts, d.name+"="+d.def)
		}
	}
	return strings.Join(parts, " ")
}

// printHelp is qemu_opts_print_help: the options sorted by name, one a line.
func (l optList) printHelp() string {
	sorted := append(optList(nil), l...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	var b strings.Builder
	for _, d := range sorted {
		s := fmt.Sprintf("  %s=<%s>", d.name, d.typ)
		if len(s) < 24 {
			s += strings.Repeat(" ", 24-len(s))
		}
		fmt.Fprintf(&b, "%s - %s\n", s, d.help)
	}
	return b.String()
}
