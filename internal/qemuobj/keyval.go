// QEMU's keyval syntax (docs/object-syntax.md): key=value,key=value with an implied first
// key, ",," for a comma, dotted keys for nesting, index keys for lists.
package qemuobj

import (
	"sort"
	"strconv"
	"strings"
)

// maxKeyFragment is QEMU's bound on one dotted fragment of a key (127 bytes).
const maxKeyFragment = 127

// parseKeyval parses s; the first item may be a bare value for implied.
func parseKeyval(s, implied string) (map[string]any, error) {
	root := map[string]any{}
	first := true
	for s != "" {
		var err error
		if s, err = parseItem(root, s, implied, first); err != nil {
			return nil, err
		}
		first = false
	}
	v, err := listify(root, "")
	if err != nil {
		return nil, err
	}
	return v.(map[string]any), nil
}

// parseItem parses one key=value item at the start of s into root and returns the rest.
func parseItem(root map[string]any, s, implied string, first bool) (string, error) {
	n := strings.IndexAny(s, "=,")
	if n < 0 {
		n = len(s)
	}
	if first && n > 0 && (n == len(s) || s[n] == ',') {
		// A bare first value belongs to the implied key; it ends at the first comma.
		root[implied] = s[:n]
		return strings.TrimPrefix(s[n:], ","), nil
	}
	key := s[:n]
	frags, err := splitKey(key)
	if err != nil {
		return "", err
	}
	if n == len(s) || s[n] != '=' {
		return "", errorf("Expected '=' after parameter '%s'", key)
	}
	val, rest := scanValue(s[n+1:])
	cur := root
	for i, f := range frags[:len(frags)-1] {
		switch old := cur[f].(type) {
		case nil:
			next := map[string]any{}
			cur[f] = next
			cur = next
		case map[string]any:
			cur = old
		default:
			return "", errorf("Parameters '%s.*' used inconsistently", strings.Join(frags[:i+1], "."))
		}
	}
	last := frags[len(frags)-1]
	if _, isMap := cur[last].(map[string]any); isMap {
		return "", errorf("Parameters '%s.*' used inconsistently", key)
	}
	cur[last] = val // a repeated key: the last value wins, as in QEMU
	return rest, nil
}

// splitKey splits a key into fragments: the first a QAPI name, later ones a name or an index.
func splitKey(key string) ([]string, error) {
	frags := strings.Split(key, ".")
	for i, f := range frags {
		if f == "" || !(validName(f) || i > 0 && isIndex(f)) {
			return nil, errorf("Invalid parameter '%s'", key)
		}
		if len(f) > maxKeyFragment {
			if len(frags) == 1 {
				return nil, errorf("Parameter '%s' is too long", f)
			}
			return nil, errorf("Parameter fragment '%s' is too long", f)
		}
	}
	return frags, nil
}

// validName is QAPI's name syntax: a letter, then letters, digits, '-' and '_'.
func validName(s string) bool {
	if !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

func isIndex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// scanValue reads a value up to an unescaped comma; ",," is a comma.
func scanValue(s string) (val, rest string) {
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

// listify turns every map whose keys are all indexes into a list, 0..n-1 with none missing.
func listify(m map[string]any, prefix string) (any, error) {
	var hasIndex, hasMember bool
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if isIndex(k) {
			hasIndex = true
		} else {
			hasMember = true
		}
		if sub, ok := m[k].(map[string]any); ok {
			v, err := listify(sub, prefix+k+".")
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
	}
	if hasIndex && hasMember {
		return nil, errorf("Parameters '%s*' used inconsistently", prefix)
	}
	if !hasIndex {
		return m, nil
	}
	elems := make([]any, len(m))
	for k, v := range m {
		i, err := strconv.Atoi(k)
		if err != nil || i >= len(m) {
			continue // too large to be in a list of len(m): some index below is missing
		}
		elems[i] = v
	}
	for i, v := range elems {
		if v == nil {
			return nil, errorf("Parameter '%s%d' missing", prefix, i)
		}
	}
	return elems, nil
}
