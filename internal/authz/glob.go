package authz

import "unicode/utf8"

// Match reports whether s matches pattern with the semantics of GLib's
// g_pattern_match_simple, which QEMU's authz-list uses for format=glob
// (docs/authz.md, "Glob rules"):
//
//   - '*' matches any run of characters, including none and including '/';
//   - '?' matches exactly one character (a UTF-8 sequence, not a byte);
//   - every other byte matches itself; there are no [...] classes and no escapes.
//
// The walk is the usual greedy one with a single back-tracking point, linear in practice
// and never exponential.
func Match(pattern, s string) bool {
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		if p < len(pattern) {
			switch pattern[p] {
			case '*':
				starP, starI = p, i
				p++
				continue
			case '?':
				_, n := utf8.DecodeRuneInString(s[i:])
				p++
				i += n
				continue
			default:
				if pattern[p] == s[i] {
					p++
					i++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		// Let the last '*' swallow one more character and retry from there.
		_, n := utf8.DecodeRuneInString(s[starI:])
		starI += n
		p, i = starP+1, starI
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
