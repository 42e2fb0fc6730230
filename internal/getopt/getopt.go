// The walk over argv: permutation of operands behind options, "--", short option clusters.
package getopt

import (
	"os"
	"strings"
)

// Results of Next besides an option's value.
const (
	End     rune = -1  // no more options; Operands follow
	Unknown rune = '?' // unrecognized or ambiguous option, or an argument to one that takes none
	Missing rune = ':' // required argument missing, when shortopts starts with ':'
)

// Parser walks one argv. Its fields mirror glibc's optind/nextchar state.
type Parser struct {
	argv    []string
	short   string // shortopts without its leading '+' and ':'
	long    []Option
	inOrder bool // REQUIRE_ORDER: stop at the first operand
	quiet   bool // shortopts starts with ':'

	optind   int
	nextchar string
	firstNon int // the skipped operands are argv[firstNon:lastNon]
	lastNon  int

	// Arg is the argument of the option Next returned last ("" for none).
	Arg string
	// Bad is argv[optind-1] when Next returned Unknown or Missing: the element at fault, except
	// inside a cluster ("-zU"), where glibc's optind still points at the element before.
	Bad string
	err error
}

// New starts parsing argv (argv[0] is skipped) with getopt's shortopts and a long table.
func New(argv []string, shortopts string, long []Option) *Parser {
	p := &Parser{argv: argv, long: long, optind: 1, firstNon: 1, lastNon: 1}
	if strings.HasPrefix(shortopts, "+") {
		p.inOrder = true
		shortopts = shortopts[1:]
	} else if _, ok := os.LookupEnv("POSIXLY_CORRECT"); ok {
		p.inOrder = true
	}
	p.quiet = strings.HasPrefix(shortopts, ":")
	p.short = shortopts
	return p
}

// Operands returns the arguments that are not options, once Next has returned End.
func (p *Parser) Operands() []string { return p.argv[p.optind:] }

// Err is glibc's message for the mistake that made Next return Unknown or Missing.
func (p *Parser) Err() error { return p.err }

// isOperand reports an argv element that is not an option: "-" alone is an operand.
func isOperand(s string) bool { return len(s) < 2 || s[0] != '-' }

// exchange moves the options just scanned, argv[lastNon:optind], in front of the operands
// skipped before them, argv[firstNon:lastNon], keeping both in order.
func (p *Parser) exchange() {
	nonopts := append([]string(nil), p.argv[p.firstNon:p.lastNon]...)
	n := copy(p.argv[p.firstNon:], p.argv[p.lastNon:p.optind])
	copy(p.argv[p.firstNon+n:], nonopts)
	p.firstNon += p.optind - p.lastNon
	p.lastNon = p.optind
}

// Next returns the next option's value, End, Unknown or Missing (see the package contract).
func (p *Parser) Next() rune {
	p.Arg = ""
	if p.nextchar == "" {
		if !p.advance() {
			return End
		}
		arg := p.argv[p.optind]
		if strings.HasPrefix(arg, "--") {
			return p.longOption(arg)
		}
		p.nextchar = arg[1:]
	}
	return p.shortOption()
}

// advance moves to the next argv element that holds options, permuting operands behind
// it; it returns false when the options are over.
func (p *Parser) advance() bool {
	p.lastNon = min(p.lastNon, p.optind)
	p.firstNon = min(p.firstNon, p.optind)
	if !p.inOrder {
		if p.firstNon != p.lastNon && p.lastNon != p.optind {
			p.exchange()
		} else if p.lastNon != p.optind {
			p.firstNon = p.optind
		}
		for p.optind < len(p.argv) && isOperand(p.argv[p.optind]) {
			p.optind++
		}
		p.lastNon = p.optind
	}
	if p.optind < len(p.argv) && p.argv[p.optind] == "--" {
		p.optind++
		if p.firstNon != p.lastNon && p.lastNon != p.optind {
			p.exchange()
		} else if p.firstNon == p.lastNon {
			p.firstNon = p.optind
		}
		p.lastNon = len(p.argv)
		p.optind = len(p.argv)
	}
	if p.optind == len(p.argv) {
		if p.firstNon != p.lastNon {
			p.optind = p.firstNon // the operands, now at the end
		}
		return false
	}
	return !isOperand(p.argv[p.optind]) // an operand here means REQUIRE_ORDER
}

// shortOption takes the next letter of a cluster such as "-rtp10809".
func (p *Parser) shortOption() rune {
	c := p.nextchar[0]
	p.nextchar = p.nextchar[1:]
	if p.nextchar == "" {
		p.optind++
	}
	i := strings.IndexByte(p.short, c)
	if i < 0 || c == ':' || c == ';' {
		return p.fail(Unknown, "invalid option -- '%c'", c)
	}
	if i+1 >= len(p.short) || p.short[i+1] != ':' {
		return rune(c)
	}
	switch {
	case p.nextchar != "": // "-p10809"
		p.Arg = p.nextchar
		p.optind++
	case p.optind == len(p.argv):
		p.nextchar = ""
		return p.fail(p.missing(), "option requires an argument -- '%c'", c)
	default:
		p.Arg = p.argv[p.optind]
		p.optind++
	}
	p.nextchar = ""
	return rune(c)
}

// missing is what a missing argument returns: Missing only if shortopts asked for it.
func (p *Parser) missing() rune {
	if p.quiet {
		return Missing
	}
	return Unknown
}
