package authz_test

import (
	"fmt"

	"github.com/qnbd/qnbd/internal/authz"
)

// The key=value --object authz-list,id=acl,rules.0.match=C=GB*,rules.0.policy=allow,
// rules.0.format=glob arrives nested, every scalar a string.
func ExampleBuild() {
	props := map[string]any{
		"rules": []any{map[string]any{"match": "C=GB,*", "policy": "allow", "format": "glob"}},
	}
	a, err := authz.Build("authz-list", "acl", props, authz.Options{Form: authz.Keyval})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(a.Allow("C=GB,O=Example,CN=client1"), a.Allow("C=FR,O=Example,CN=client2"))

	_, err = authz.Build("authz-list", "acl", map[string]any{"policy": "bogus"}, authz.Options{})
	fmt.Println(err)
	// Output:
	// true false
	// Parameter 'policy' does not accept value 'bogus'
}
