package qemuobj

import (
	"strings"
	"testing"
)

// Parse never panics, and what it accepts has a known type, a well-formed id and only the
// value types its syntax can produce.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"tls-creds-x509,id=t,endpoint=server,dir=/d,,x",
		"authz-list,id=a,rules.0.match=x,rules.1.policy=deny,rules.1.match=y,policy=allow",
		"authz-list,id=a,rules.1.x=1", "a.b.c=1,a.b=2", "qom-type=secret,id=s,a.0=1,a.x=2",
		`{"qom-type":"authz-list","id":"a","rules":[{"match":"x"}],"n":1.5,"b":true,"z":null}`,
		"", ",", ",,", "=", "x,", "{", `{"qom-type":1}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := Parse(s)
		if err != nil {
			return
		}
		if !Known(o.Type) || !wellFormedID(o.ID) {
			t.Fatalf("accepted %q as %+v", s, o)
		}
		if o.Keyval != !strings.HasPrefix(s, "{") {
			t.Fatalf("%q: Keyval=%v", s, o.Keyval)
		}
		if o.Keyval {
			checkKeyvalValue(t, s, o.Props)
		}
	})
}

func checkKeyvalValue(t *testing.T, s string, v any) {
	switch v := v.(type) {
	case string:
	case map[string]any:
		for _, e := range v {
			checkKeyvalValue(t, s, e)
		}
	case []any:
		for _, e := range v {
			checkKeyvalValue(t, s, e)
		}
	default:
		t.Fatalf("%q: keyval produced a %T", s, v)
	}
}
