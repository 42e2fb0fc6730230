package authz

import "testing"

func mustBuild(t *testing.T, arg string) Authorizer {
	t.Helper()
	typ, id, props, form := objectProps(t, arg)
	a, err := Build(typ, id, props, Options{Form: form})
	if err != nil {
		t.Fatalf("%s: %v", arg, err)
	}
	return a
}

type allowCase struct {
	identity string
	allow    bool
}

func checkAllows(t *testing.T, what string, a Authorizer, cases []allowCase) {
	t.Helper()
	for _, c := range cases {
		if got := a.Allow(c.identity); got != c.allow {
			t.Errorf("%s: Allow(%q) = %v, want %v", what, c.identity, got, c.allow)
		}
	}
}

func TestSimpleAllowsOnlyItsIdentityByteForByte(t *testing.T) {
	a := mustBuild(t, "authz-simple,id=a,identity=CN=client1")
	checkAllows(t, "simple", a, []allowCase{
		{"CN=client1", true}, {"CN=client1 ", false}, {"cn=client1", false},
		{"CN=client", false}, {"", false}, {"CN=*", false},
	})
}

func TestListDefaultPolicyIsDeny(t *testing.T) {
	checkAllows(t, "no rules", mustBuild(t, "authz-list,id=a"), []allowCase{{"CN=x", false}, {"", false}})
	checkAllows(t, "policy=allow", mustBuild(t, "authz-list,id=a,policy=allow"), []allowCase{{"CN=x", true}})
	checkAllows(t, "no match, default deny",
		mustBuild(t, "authz-list,id=a,rules.0.match=CN=a,rules.0.policy=allow"),
		[]allowCase{{"CN=a", true}, {"CN=b", false}})
}

func TestListFirstMatchingRuleDecides(t *testing.T) {
	a := mustBuild(t, "authz-list,id=a,policy=allow,"+
		"rules.0.match=CN=bad,rules.0.policy=deny,"+
		"rules.1.match=CN=*,rules.1.policy=allow,rules.1.format=glob,"+
		"rules.2.match=CN=good,rules.2.policy=deny,"+
		"rules.3.match=O=*,rules.3.policy=deny,rules.3.format=glob")
	checkAllows(t, "ordered", a, []allowCase{
		{"CN=bad", false},   // rule 0 before the glob
		{"CN=good", true},   // rule 1 wins over the later deny
		{"O=x,CN=y", false}, // rule 3
		{"C=GB", true},      // default
	})
}

func TestRuleFormatDefaultsToExact(t *testing.T) {
	a := mustBuild(t, "authz-list,id=a,rules.0.match=CN=*,rules.0.policy=allow")
	checkAllows(t, "exact", a, []allowCase{{"CN=*", true}, {"CN=x", false}})
	g := mustBuild(t, "authz-list,id=a,rules.0.match=CN=*,rules.0.policy=allow,rules.0.format=glob")
	checkAllows(t, "glob", g, []allowCase{{"CN=*", true}, {"CN=x", true}, {"O=x", false}})
}

func TestJSONFormBuildsTheSameList(t *testing.T) {
	a := mustBuild(t, `{"qom-type":"authz-list","id":"a","policy":"deny","rules":[`+
		`{"match":"C=GB,O=Example,CN=*","policy":"allow","format":"glob"},`+
		`{"match":"CN=root","policy":"allow","format":"exact"}]}`)
	checkAllows(t, "json", a, []allowCase{
		{"C=GB,O=Example,CN=client1", true}, {"C=GB,O=Example,OU=x,CN=y", false},
		{"CN=root", true}, {"CN=root2", false},
	})
}

func TestInferFormNeedsANonStringForJSON(t *testing.T) {
	for _, c := range []struct {
		props map[string]any
		want  Form
	}{
		{map[string]any{"identity": "x"}, Keyval},
		{map[string]any{"rules": []any{map[string]any{"match": "x", "policy": "allow"}}}, Keyval},
		{map[string]any{"filename": "/x", "refresh": false}, JSON},
		{map[string]any{"rules": []any{map[string]any{"match": 1.0}}}, JSON},
		{map[string]any{"policy": nil}, JSON},
	} {
		if got := InferForm(c.props); got != c.want {
			t.Errorf("InferForm(%v) = %v, want %v", c.props, got, c.want)
		}
	}
}

func TestUnknownObjectTypeIsRefused(t *testing.T) {
	_, err := FromObject("authz-pam", "a", map[string]any{"service": "x"})
	if err == nil || err.Error() != "invalid object type: authz-pam" {
		t.Fatalf("got %v", err)
	}
	if IsType("authz-pam") || !IsType("authz-list-file") || !IsType("authz-listfile") {
		t.Fatal("IsType disagrees with Build")
	}
}

func TestCheckRefusesInQemuNBDsWords(t *testing.T) {
	p := newTestPKI(t)
	good := p.issue(t, rawName(t, rdn1(oidC, tPrintable, "GB"), rdn1(oidCN, tUTF8, "c1")), false)
	empty := p.issue(t, rawName(t, rdn1(oidCN, tUTF8, "")), false)
	allowAll := mustBuild(t, "authz-list,id=a,policy=allow")
	if err := Check(&Simple{Identity: "C=GB,CN=c1"}, good); err != nil {
		t.Errorf("allowed client refused: %v", err)
	}
	if err := Check(&Simple{Identity: "CN=c1"}, good); err == nil ||
		err.Error() != "TLS x509 authz check for C=GB,CN=c1 is denied" {
		t.Errorf("denied client: %v", err)
	}
	// An unrenderable subject is refused even by an authorizer that allows everyone.
	if err := Check(allowAll, empty); err == nil ||
		err.Error() != "Cannot get client distinguished name: ASN1 parser: Value is not valid." {
		t.Errorf("unrenderable subject: %v", err)
	}
}
