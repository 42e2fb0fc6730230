package authz

import "testing"

func TestFromObjectBuildsEachKind(t *testing.T) {
	a, err := FromObject("authz-simple", "a", map[string]any{"identity": "CN=x"})
	if err != nil || !a.Allow("CN=x") || a.Allow("CN=y") {
		t.Fatalf("authz-simple: %v %v", a, err)
	}
	l, err := FromObject("authz-list", "b", map[string]any{
		"policy": "deny",
		"rules":  []any{map[string]any{"match": "CN=*", "policy": "allow", "format": "glob"}},
	})
	if err != nil || !l.Allow("CN=z") || l.Allow("O=z") {
		t.Fatalf("authz-list: %v %v", l, err)
	}
}
