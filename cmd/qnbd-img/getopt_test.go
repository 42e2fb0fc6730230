// Tests of the GNU getopt_long emulation against glibc's documented behaviour.
package main

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// trace runs getopt to the end (or the first error) and renders what it returned.
func trace(argv []string, short string, long []longOpt) string {
	g := newGetopt(argv, short, long)
	var out []string
	for {
		c := g.next()
		switch c {
		case optEnd:
			out = append(out, "operands="+strings.Join(g.operands(), "|"))
			return strings.Join(out, " ")
		case optUnknown:
			return strings.Join(append(out, "unknown:"+g.bad), " ")
		case optMissing:
			return strings.Join(append(out, "missing:"+g.bad), " ")
		}
		name := string(c)
		if c >= 256 {
			name = fmt.Sprintf("L%d", c)
		}
		if g.optarg != "" {
			name += "=" + g.optarg
		}
		out = append(out, name)
	}
}

func TestGetopt(t *testing.T) {
	long := []longOpt{
		longHelp, longFormat, longOutputOpt, longForceShare,
		{"backing-chain", noArgument, optBackingChain},
		{"start-offset", requiredArgument, 's'},
	}
	const short = ":f:hUs:"
	tests := []struct {
		args string
		want string
	}{
		{"a.img", "operands=a.img"},
		{"-f qcow2 a.img", "f=qcow2 operands=a.img"},
		{"-fqcow2 a.img", "f=qcow2 operands=a.img"},
		{"a.img -f qcow2", "f=qcow2 operands=a.img"},                          // permutation
		{"a.img b.img -U -f raw c.img", "U f=raw operands=a.img|b.img|c.img"}, // operands keep their order
		{"-Uf raw a.img", "U f=raw operands=a.img"},                           // clustered short options
		{"-Ufraw a.img", "U f=raw operands=a.img"},
		{"-- -f a.img", "operands=-f|a.img"},
		{"a.img -- -U", "operands=a.img|-U"},
		{"- a.img", "operands=-|a.img"}, // a lone dash is an operand
		{"--output=json a.img", "L256=json operands=a.img"},
		{"--output json a.img", "L256=json operands=a.img"},
		{"--out=json a.img", "L256=json operands=a.img"}, // unambiguous abbreviation
		{"--back a.img", "L257 operands=a.img"},
		{"--f=qcow2 a.img", "unknown:--f=qcow2"},                 // ambiguous: --format / --force-share
		{"--backing-chain=x a.img", "unknown:--backing-chain=x"}, // argument to a flag
		{"--bogus a.img", "unknown:--bogus"},
		{"-z a.img", "unknown:-z"},
		{"-Uz a.img", "U unknown:-Uz"},
		{"-f", "missing:-f"},
		{"a.img -f", "missing:-f"},
		{"--output", "missing:--output"},
		{"--s 0 a.img", "s=0 operands=a.img"},
		{"--format=", "f operands="}, // an empty argument
	}
	for _, tt := range tests {
		argv := append([]string{"cmd"}, strings.Fields(tt.args)...)
		if got := trace(argv, short, long); got != tt.want {
			t.Errorf("getopt %q = %q, want %q", tt.args, got, tt.want)
		}
	}
}

func TestGetoptInOrder(t *testing.T) {
	g := newGetopt([]string{"prog", "-V", "info", "-f", "x"}, "+:hVT:", nil)
	g.inOrder = true
	if c := g.next(); c != 'V' {
		t.Fatalf("first option = %q, want V", c)
	}
	if c := g.next(); c != optEnd {
		t.Fatalf("second = %q, want end at the command name", c)
	}
	if got, want := g.operands(), []string{"info", "-f", "x"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("operands = %q, want %q", got, want)
	}
}
