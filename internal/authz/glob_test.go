package authz

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
)

var globCases = []struct {
	pattern, s string
	match      bool
}{
	{"", "", true},
	{"", "a", false},
	{"*", "", true},
	{"*", "anything, at all/with/slashes", true},
	{"?", "", false},
	{"?", "a", true},
	{"?", "ab", false},
	{"?", "é", true},   // one character, two bytes
	{"??", "é", false}, // not two bytes
	{"?", "雪", true},
	{"?", "🙂", true},
	{"CN=*", "CN=client1", true},
	{"CN=*", "O=x,CN=client1", false}, // anchored at the start
	{"*CN=client1", "O=x,CN=client1", true},
	{"*,CN=client?", "C=GB,O=Example,CN=client7", true},
	{"*,CN=client?", "C=GB,O=Example,CN=client17", false},
	{"C=GB,*,EMAIL=*@example.com", "C=GB,O=Example,CN=c1,EMAIL=c1@example.com", true},
	{"a*b*c", "abc", true},
	{"a*b*c", "aXbYbZc", true},
	{"a*b*c", "aXbYbZ", false},
	{"a**b", "ab", true},
	{"*?", "", false},
	{"*?", "x", true},
	{"?*?", "x", false},
	{"[ab]", "a", false}, // no character classes
	{"[ab]", "[ab]", true},
	{`\*`, `\x`, true}, // no escapes: a backslash, then a wildcard
	{`\*`, `*`, false},
	{"CN=a\\,b", "CN=a\\,b", true},
	{"*a", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", false},
}

func TestGlobMatchesAsGLib(t *testing.T) {
	for _, c := range globCases {
		if got := Match(c.pattern, c.s); got != c.match {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.s, got, c.match)
		}
	}
}

// glibMatches asks GLib's own g_pattern_match_simple (through PyGObject) about each pair.
func glibMatches(t *testing.T, pairs [][2]string) []bool {
	t.Helper()
	in, err := json.Marshal(pairs)
	if err != nil {
		t.Fatal(err)
	}
	const script = `import json, sys
from gi.repository import GLib
print(json.dumps([GLib.pattern_match_simple(p, s) for p, s in json.load(sys.stdin)]))`
	cmd := tool(t, "/usr/bin/python3", "-c", script)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 with GLib: %v", err)
	}
	var res []bool
	if err := json.Unmarshal(out, &res); err != nil || len(res) != len(pairs) {
		t.Fatalf("GLib's answer %q: %v", out, err)
	}
	return res
}

// TestGlobAgreesWithGLib compares Match with GLib's g_pattern_match_simple on the table
// and on a few thousand generated pairs over an alphabet of wildcards, ASCII, '/', and
// multi-byte characters.
func TestGlobAgreesWithGLib(t *testing.T) {
	var pairs [][2]string
	for _, c := range globCases {
		pairs = append(pairs, [2]string{c.pattern, c.s})
	}
	rng := rand.New(rand.NewPCG(9, 9))
	word := func(alphabet []string, max int) string {
		var b strings.Builder
		for range rng.IntN(max + 1) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		return b.String()
	}
	pat := []string{"*", "?", "a", "b", "/", "é", "雪", ","}
	str := []string{"a", "b", "/", "é", "雪", ",", "*", "?"}
	for range 3000 {
		pairs = append(pairs, [2]string{word(pat, 6), word(str, 8)})
	}
	glib := glibMatches(t, pairs)
	for i, p := range pairs {
		if got := Match(p[0], p[1]); got != glib[i] {
			t.Errorf("Match(%q, %q) = %v, GLib says %v", p[0], p[1], got, glib[i])
		}
	}
}
