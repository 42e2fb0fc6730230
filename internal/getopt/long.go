// Long options: the table, exact names, abbreviations and glibc's ambiguity rule.
package getopt

import (
	"fmt"
	"strings"
)

// ArgKind says whether a long option takes an argument.
type ArgKind uint8

const (
	NoArgument ArgKind = iota
	RequiredArgument
)

// Option is one entry of a long option table, as glibc's struct option (without flag).
type Option struct {
	Name string
	Arg  ArgKind
	Val  rune // what Next returns for it: usually its short letter, or 256 and up
	// Extra marks an option added to a table copied from another program: an abbreviation
	// matches it only when it matches none of the others, so that every command line the
	// original accepts or refuses means the same (see the package contract).
	Extra bool
}

// lookup finds the option "--"+name names: an exact name, else an abbreviation that is not
// ambiguous, first among the original options, then among the Extra ones. ambig lists the
// possibilities when it is ambiguous.
func (p *Parser) lookup(name string) (found *Option, ambig []string) {
	for i := range p.long {
		if p.long[i].Name == name {
			return &p.long[i], nil
		}
	}
	if found, ambig = p.abbreviation(name, false); found != nil || ambig != nil {
		return found, ambig
	}
	return p.abbreviation(name, true)
}

// abbreviation resolves name as a prefix of the options whose Extra is extra, by glibc's rule:
// ambiguous only when the matches differ in argument kind or value.
func (p *Parser) abbreviation(name string, extra bool) (found *Option, ambig []string) {
	marked := make([]bool, len(p.long))
	first := -1
	for i := range p.long {
		o := &p.long[i]
		if o.Extra != extra || !strings.HasPrefix(o.Name, name) {
			continue
		}
		if first < 0 {
			first = i
			continue
		}
		if f := p.long[first]; f.Arg != o.Arg || f.Val != o.Val {
			marked[first], marked[i] = true, true
		}
	}
	for i, m := range marked {
		if m {
			ambig = append(ambig, "'--"+p.long[i].Name+"'")
		}
	}
	if first < 0 || ambig != nil {
		return nil, ambig
	}
	return &p.long[first], nil
}

// longOption handles the argv element elem, "--name" or "--name=value".
func (p *Parser) longOption(elem string) rune {
	body := elem[2:]
	name, value, hasValue := strings.Cut(body, "=")
	p.optind++
	p.nextchar = ""
	o, ambig := p.lookup(name)
	switch {
	case ambig != nil:
		return p.fail(Unknown, "option '%s' is ambiguous; possibilities: %s", elem, strings.Join(ambig, " "))
	case o == nil:
		return p.fail(Unknown, "unrecognized option '%s'", elem)
	case hasValue && o.Arg == NoArgument:
		return p.fail(Unknown, "option '--%s' doesn't allow an argument", o.Name)
	case hasValue:
		p.Arg = value
	case o.Arg == RequiredArgument:
		if p.optind >= len(p.argv) {
			return p.fail(p.missing(), "option '--%s' requires an argument", o.Name)
		}
		p.Arg = p.argv[p.optind]
		p.optind++
	}
	return o.Val
}

// fail records a mistake and returns r. Bad is argv[optind-1], the element qemu-img names in
// its own messages: for "-zU" that is the element before it, as in glibc.
func (p *Parser) fail(r rune, format string, args ...any) rune {
	p.Bad = p.argv[p.optind-1]
	p.err = fmt.Errorf(format, args...)
	return r
}

// NoArg is a long option without an argument that Next reports as val.
func NoArg(name string, val rune) Option { return Option{Name: name, Arg: NoArgument, Val: val} }

// ReqArg is a long option with a required argument that Next reports as val.
func ReqArg(name string, val rune) Option { return Option{Name: name, Arg: RequiredArgument, Val: val} }
