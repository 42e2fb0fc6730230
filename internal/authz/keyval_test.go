package authz

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// objectProps turns an --object argument into what the real parser hands to FromObject:
// qom-type, id and the nested properties, and the form. It is a test stand-in for the
// command-line parser (no ",," escapes, no implied keys), enough for the tables here.
func objectProps(t *testing.T, arg string) (typ, id string, props map[string]any, form Form) {
	t.Helper()
	if strings.HasPrefix(arg, "{") {
		if err := json.Unmarshal([]byte(arg), &props); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		typ, _ = props["qom-type"].(string)
		id, _ = props["id"].(string)
		delete(props, "qom-type")
		delete(props, "id")
		return typ, id, props, JSON
	}
	parts := strings.Split(arg, ",")
	typ = parts[0]
	root := map[string]any{}
	for _, kv := range parts[1:] {
		k, v, _ := strings.Cut(kv, "=")
		if k == "id" {
			id = v
			continue
		}
		path := strings.Split(k, ".")
		m := root
		for _, p := range path[:len(path)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[path[len(path)-1]] = v
	}
	return typ, id, listify(root).(map[string]any), Keyval
}

// listify turns every object whose keys are 0..n-1 into a list, as QEMU's keyval parser
// does.
func listify(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	keys := make([]string, 0, len(m))
	for k, e := range m {
		m[k] = listify(e)
		keys = append(keys, k)
	}
	sort.Strings(keys)
	idx := make([]int, 0, len(keys))
	for _, k := range keys {
		i, err := strconv.Atoi(k)
		if err != nil {
			return m
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return m
	}
	sort.Ints(idx)
	l := make([]any, len(idx))
	for n, i := range idx {
		if i != n {
			return m
		}
		l[n] = m[strconv.Itoa(i)]
	}
	return l
}
