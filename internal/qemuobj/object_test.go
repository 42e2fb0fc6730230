package qemuobj

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseKeyvalNestsAndListsAsQemu(t *testing.T) {
	o, err := Parse("authz-list,id=auth0,rules.0.match=CN=a,,O=b,rules.0.policy=allow," +
		"rules.1.match=*,rules.1.policy=deny,rules.1.format=glob,policy=deny")
	if err != nil {
		t.Fatal(err)
	}
	want := &Object{Type: "authz-list", ID: "auth0", Keyval: true, Props: map[string]any{
		"policy": "deny",
		"rules": []any{
			map[string]any{"match": "CN=a,O=b", "policy": "allow"},
			map[string]any{"match": "*", "policy": "deny", "format": "glob"},
		},
	}}
	if !reflect.DeepEqual(o, want) {
		t.Fatalf("got %#v\nwant %#v", o, want)
	}
}

func TestParseKeyvalExplicitTypeLastValueWinsTrailingComma(t *testing.T) {
	o, err := Parse("id=a,qom-type=tls-creds-x509,endpoint=client,endpoint=server,dir=/x,")
	if err != nil {
		t.Fatal(err)
	}
	if o.Type != "tls-creds-x509" || o.ID != "a" || o.Props["endpoint"] != "server" || o.Props["dir"] != "/x" {
		t.Fatalf("got %#v", o)
	}
}

func TestParseJSONKeepsTypes(t *testing.T) {
	o, err := Parse(`{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"allow"}],"policy":"deny","refresh":true}`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"rules": []any{map[string]any{"match": "x", "policy": "allow"}},
		"policy": "deny", "refresh": true}
	if o.Keyval || o.Type != "authz-list" || o.ID != "a" || !reflect.DeepEqual(o.Props, want) {
		t.Fatalf("got %#v", o)
	}
}

// Every message below was measured with qemu-nbd 7.2 (--object ARG, exit status 1).
func TestParseErrorsReadAsQemu(t *testing.T) {
	long := strings.Repeat("k", 130)
	for _, tc := range []struct{ arg, msg string }{
		{"authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.2.match=y,rules.2.policy=deny,policy=deny",
			"Parameter 'rules.1' missing"},
		{"authz-list,id=a,rules.0.match=x,rules.x.policy=allow,policy=deny", "Parameters 'rules.*' used inconsistently"},
		{"authz-list,id=a,rules=x,rules.0.policy=allow,policy=deny", "Parameters 'rules.*' used inconsistently"},
		{"authz-list,id=a,ru*les=x", "Invalid parameter 'ru*les'"},
		{"authz-list,id=a,rules", "Expected '=' after parameter 'rules'"},
		{"authz-list,id=a,,b=1", "Parameter 'id' expects an identifier\n" +
			"Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."},
		{"tls-creds-x509,id=1t,endpoint=server", "Parameter 'id' expects an identifier\n" +
			"Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."},
		{"", "Parameter 'qom-type' is missing"},
		{"nosuch,id=t", "Parameter 'qom-type' does not accept value 'nosuch'"},
		{"tls-creds-x509,endpoint=server,dir=d", "Parameter 'id' is missing"},
		{"authz-simple,id=a," + long + "=1", "Parameter '" + long + "' is too long"},
		{`{"id":"a","identity":"x"}`, "Parameter 'qom-type' is missing"},
		{`[1]`, "Parameter 'qom-type' does not accept value '[1]'"},
		{`{"qom-type":"authz-simple","identity":"x"}`, "Parameter 'id' is missing"},
		{`{"qom-type":"authz-simple","id":5,"identity":"x"}`, "Invalid parameter type for 'id', expected: string"},
		{`{"qom-type":"tls-creds-x509","id":"t","endpoint":"server","dir":"p2/good"`, "JSON parse error, premature EOI"},
		{`{"qom-type":"nope","id":"t"}`, "Parameter 'qom-type' does not accept value 'nope'"},
	} {
		_, err := Parse(tc.arg)
		if err == nil || err.Error() != tc.msg {
			t.Errorf("Parse(%q) = %v, want %q", tc.arg, err, tc.msg)
		}
	}
}

func TestPropsHelpersReadAsQemu(t *testing.T) {
	kv, _ := Parse("tls-creds-x509,id=t,verify-peer=maybe,endpoint=x,bogus=1,dir=d")
	if _, err := kv.Bool("verify-peer", true); err == nil || err.Error() != "Parameter 'verify-peer' expects 'on' or 'off'" {
		t.Errorf("Bool: %v", err)
	}
	if _, err := kv.Enum("endpoint", "client", "client", "server"); err == nil ||
		err.Error() != "Parameter 'endpoint' does not accept value 'x'" {
		t.Errorf("Enum: %v", err)
	}
	if err := kv.CheckUnexpected("dir", "endpoint", "verify-peer"); err == nil || err.Error() != "Parameter 'bogus' is unexpected" {
		t.Errorf("CheckUnexpected: %v", err)
	}
	js, _ := Parse(`{"qom-type":"tls-creds-x509","id":"t","verify-peer":"on","dir":3}`)
	if _, err := js.Bool("verify-peer", true); err == nil ||
		err.Error() != "Invalid parameter type for 'verify-peer', expected: boolean" {
		t.Errorf("JSON Bool: %v", err)
	}
	if _, _, err := js.String("dir"); err == nil || err.Error() != "Invalid parameter type for 'dir', expected: string" {
		t.Errorf("JSON String: %v", err)
	}
	for v, want := range map[string]bool{"on": true, "yes": true, "off": false, "no": false} {
		o, _ := Parse("tls-creds-x509,id=t,verify-peer=" + v)
		if got, err := o.Bool("verify-peer", !want); err != nil || got != want {
			t.Errorf("verify-peer=%s: %v %v", v, got, err)
		}
	}
}

func TestSetRefusesDuplicateIDAsQemu(t *testing.T) {
	var s Set
	a, _ := Parse("authz-simple,id=a,identity=x")
	b, _ := Parse("tls-creds-x509,id=a,endpoint=server,dir=d")
	if err := s.Add(a); err != nil {
		t.Fatal(err)
	}
	err := s.Add(b)
	if err == nil || err.Error() != "attempt to add duplicate property 'a' to object (type 'container')" {
		t.Fatalf("duplicate: %v", err)
	}
	if s.Get("a") != a || len(s.All()) != 1 {
		t.Fatal("set changed by the refused add")
	}
}
