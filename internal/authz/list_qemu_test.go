package authz

import "testing"

// TestListDecidesAsQemuNBD serves with qemu-nbd 7.2 and an authz-list of glob, exact and
// default rules, connects with client certificates of several subjects, and checks that
// our List built from the same object lets in exactly the clients qemu-nbd lets in.
func TestListDecidesAsQemuNBD(t *testing.T) {
	const object = `{"qom-type":"authz-list","id":"a","policy":"deny","rules":[` +
		`{"match":"*CN=blocked*","policy":"deny","format":"glob"},` +
		`{"match":"C=GB,O=Example,*","policy":"allow","format":"glob"},` +
		`{"match":"CN=exact?","policy":"allow"},` +
		`{"match":"O=Other,CN=?","policy":"allow","format":"glob"}]}`
	typ, id, props, form := objectProps(t, object)
	ours, err := Build(typ, id, props, Options{Form: form})
	if err != nil {
		t.Fatal(err)
	}
	p := newTestPKI(t)
	q := startQemuNBDWith(t, p, object)
	gb := func(cn string) [][]av {
		return [][]av{rdn1(oidC, tPrintable, "GB"), rdn1(oidO, tUTF8, "Example"), rdn1(oidCN, tUTF8, cn)}
	}
	other := func(cn string) [][]av { return [][]av{rdn1(oidO, tUTF8, "Other"), rdn1(oidCN, tUTF8, cn)} }
	subjects := [][][]av{
		gb("client1"),  // rule 1
		gb("blocked1"), // rule 0 first
		{rdn1(oidC, tPrintable, "FR"), rdn1(oidO, tUTF8, "Example"), rdn1(oidCN, tUTF8, "x")}, // default
		{rdn1(oidCN, tUTF8, "exact?")}, // exact: '?' is literal
		{rdn1(oidCN, tUTF8, "exactX")},
		other("é"),  // '?' is one character
		other("ab"), // not two
	}
	allowed := 0
	for _, rdns := range subjects {
		cert := p.issue(t, rawName(t, rdns...), false)
		dn := DN(cert)
		qemu := q.connect(t, p, cert)
		if qemu {
			allowed++
		}
		if got := ours.Allow(dn); got != qemu {
			t.Errorf("%s: qemu-nbd lets in %v, ours %v", dn, qemu, got)
		}
	}
	if allowed == 0 || allowed == len(subjects) {
		t.Fatalf("qemu-nbd let in %d of %d clients: the rules decide nothing", allowed, len(subjects))
	}
}
