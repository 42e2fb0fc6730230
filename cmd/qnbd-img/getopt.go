// GNU getopt_long, as qemu-img parses its command lines: argument permutation, clustered
// short options, "--" and unambiguous abbreviations of long options.
package main

import "strings"

// Argument requirements of a long option.
const (
	noArgument       = 0
	requiredArgument = 1
)

// longOpt is one entry of a long option table.
type longOpt struct {
	name   string
	hasArg int
	val    rune
}

// Results of getopt.next besides an option character.
const (
	optEnd     rune = -1  // no more options; positional arguments follow
	optUnknown rune = '?' // unrecognized option, or an argument given to one that takes none
	optMissing rune = ':' // required argument missing (optstring starts with ':')
)

// getopt walks argv (argv[0] is the command name) the way glibc's getopt_long does with
// the default PERMUTE ordering: options may come after operands, and the operands are moved
// behind the options as scanning proceeds, so that after optEnd, argv[optind:] are the
// operands in their original order.
type getopt struct {
	argv      []string
	short     string
	long      []longOpt
	optind    int
	nextchar  string
	firstNon  int
	lastNon   int
	optarg    string
	bad       string // the argv element that caused optUnknown or optMissing
	processed int    // index of the element the last option came from
	// inOrder stops at the first operand (REQUIRE_ORDER, an optstring starting with '+').
	inOrder bool
}

func newGetopt(argv []string, short string, long []longOpt) *getopt {
	return &getopt{argv: argv, short: short, long: long, optind: 1, firstNon: 1, lastNon: 1}
}

func nonOption(s string) bool { return s == "" || s[0] != '-' || s == "-" }

// exchange swaps the block of skipped operands [firstNon, lastNon) with the options just
// scanned [lastNon, optind), as glibc does.
func (g *getopt) exchange() {
	a := g.argv[g.firstNon:g.optind]
	nonopts := append([]string(nil), g.argv[g.firstNon:g.lastNon]...)
	opts := append([]string(nil), g.argv[g.lastNon:g.optind]...)
	copy(a, opts)
	copy(a[len(opts):], nonopts)
	g.firstNon += g.optind - g.lastNon
	g.lastNon = g.optind
}

// operands returns the arguments left after next returned optEnd.
func (g *getopt) operands() []string { return g.argv[g.optind:] }

// next returns the next option character (or the val of a long option), with its argument in
// g.optarg; optEnd when options are exhausted; optUnknown / optMissing on errors, with the
// offending argv element in g.bad.
func (g *getopt) next() rune {
	g.optarg = ""
	if g.nextchar == "" {
		if g.lastNon > g.optind {
			g.lastNon = g.optind
		}
		if g.firstNon > g.optind {
			g.firstNon = g.optind
		}
		if !g.inOrder {
			if g.firstNon != g.lastNon && g.lastNon != g.optind {
				g.exchange()
			} else if g.lastNon != g.optind {
				g.firstNon = g.optind
			}
			for g.optind < len(g.argv) && nonOption(g.argv[g.optind]) {
				g.optind++
			}
			g.lastNon = g.optind
		}
		if g.optind != len(g.argv) && g.argv[g.optind] == "--" {
			g.optind++
			if g.firstNon != g.lastNon && g.lastNon != g.optind {
				g.exchange()
			} else if g.firstNon == g.lastNon {
				g.firstNon = g.optind
			}
			g.lastNon = len(g.argv)
			g.optind = len(g.argv)
		}
		if g.optind == len(g.argv) {
			if g.firstNon != g.lastNon {
				g.optind = g.firstNon
			}
			return optEnd
		}
		if nonOption(g.argv[g.optind]) { // only reached in order mode
			return optEnd
		}
		g.processed = g.optind
		arg := g.argv[g.optind]
		if strings.HasPrefix(arg, "--") {
			return g.longOption(arg[2:])
		}
		g.nextchar = arg[1:]
	}
	g.processed = g.optind
	c := rune(g.nextchar[0])
	g.nextchar = g.nextchar[1:]
	elem := g.argv[g.optind]
	if g.nextchar == "" {
		g.optind++
	}
	i := strings.IndexRune(strings.TrimLeft(g.short, "+:"), c)
	short := strings.TrimLeft(g.short, "+:")
	if i < 0 || c == ':' || c == ';' {
		g.bad = elem
		return optUnknown
	}
	if i+1 < len(short) && short[i+1] == ':' {
		switch {
		case g.nextchar != "":
			g.optarg = g.nextchar
			g.optind++
		case g.optind == len(g.argv):
			g.bad = elem
			g.nextchar = ""
			return optMissing
		default:
			g.optarg = g.argv[g.optind]
			g.optind++
		}
		g.nextchar = ""
	}
	return c
}

// longOption handles "--name[=value]"; body is the part after "--".
func (g *getopt) longOption(body string) rune {
	elem := g.argv[g.optind]
	name, value, hasValue := strings.Cut(body, "=")
	var found *longOpt
	ambiguous := false
	for i := range g.long {
		if g.long[i].name == name {
			found, ambiguous = &g.long[i], false
			break
		}
		if strings.HasPrefix(g.long[i].name, name) {
			switch {
			case found == nil:
				found = &g.long[i]
			case found.hasArg != g.long[i].hasArg || found.val != g.long[i].val:
				ambiguous = true
			}
		}
	}
	g.optind++
	g.nextchar = ""
	if found == nil || ambiguous {
		g.bad = elem
		return optUnknown
	}
	if hasValue {
		if found.hasArg == noArgument {
			g.bad = elem
			return optUnknown
		}
		g.optarg = value
		return found.val
	}
	if found.hasArg == requiredArgument {
		if g.optind >= len(g.argv) {
			g.bad = elem
			return optMissing
		}
		g.optarg = g.argv[g.optind]
		g.optind++
	}
	return found.val
}
