package authz

import (
	"path/filepath"
	"strings"
	"testing"
)

// objectCases are --object arguments qemu-nbd 7.2 takes (authz-simple, authz-list), good
// and bad, in both forms.
var objectCases = []string{
	"authz-simple,id=a,identity=CN=x",
	"authz-simple,id=a,identity=",
	"authz-simple,id=a",
	"authz-simple,id=a,identity=x,bar=1",
	"authz-simple,id=a,identity.x=1",
	"authz-list,id=a",
	"authz-list,id=a,policy=allow",
	"authz-list,id=a,policy=maybe",
	"authz-list,id=a,policy=",
	"authz-list,id=a,policy=ALLOW",
	"authz-list,id=a,foo=bar",
	"authz-list,id=a,rules.0.match=x,rules.0.policy=allow",
	"authz-list,id=a,rules.0.match=x,rules.0.policy=deny,rules.0.format=glob,rules.1.match=y,rules.1.policy=allow,policy=allow",
	"authz-list,id=a,rules.0.match=x,rules.0.policy=bogus",
	"authz-list,id=a,rules.0.match=x",
	"authz-list,id=a,rules.0.policy=allow",
	"authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.0.format=regex",
	"authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.0.format=GLOB",
	"authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.0.extra=1",
	"authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.1.match=y",
	"authz-list,id=a,rules=x",
	"authz-list,id=a,rules.match=x",
	"authz-list,id=a,rules.0=x",
	"authz-list,id=a,policy=bad,rules.0.match=x",
	"authz-list,id=a,rules.0.match=x,rules.0.policy=allow,rules.0.format=x,policy=bad",
	"authz-list,id=a,rules.0.match.x=1,rules.0.policy=allow",
	"authz-list,id=a,rules.0.match=x,rules.0.policy.y=allow",
	"authz-pam,id=a,service=x",
	`{"qom-type":"authz-simple","id":"a","identity":"CN=x"}`,
	`{"qom-type":"authz-simple","id":"a","identity":true}`,
	`{"qom-type":"authz-simple","id":"a","identity":null}`,
	`{"qom-type":"authz-simple","id":"a","identity":["x"]}`,
	`{"qom-type":"authz-simple","id":"a"}`,
	`{"qom-type":"authz-list","id":"a","rules":[]}`,
	`{"qom-type":"authz-list","id":"a","policy":"allow","rules":[{"match":"*","policy":"deny","format":"glob"}]}`,
	`{"qom-type":"authz-list","id":"a","policy":1}`,
	`{"qom-type":"authz-list","id":"a","policy":null}`,
	`{"qom-type":"authz-list","id":"a","rules":"x"}`,
	`{"qom-type":"authz-list","id":"a","rules":{"match":"x"}}`,
	`{"qom-type":"authz-list","id":"a","rules":["x"]}`,
	`{"qom-type":"authz-list","id":"a","rules":[{"match":1,"policy":"allow"}]}`,
	`{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":true}]}`,
	`{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"allow","format":2}]}`,
	`{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"allow","format":"glob","zz":1}],"yy":2}`,
	`{"qom-type":"authz-list","id":"a","rules":[{"policy":"bad"}],"yy":2}`,
	`{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"allow"},{"match":"x"}]}`,
	`{"qom-type":"authz-list","id":"a","policy":"bad","rules":[{"match":"x"}]}`,
	`{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"allow","format":"x"}],"policy":"bad"}`,
	`{"qom-type":"authz-list","id":"a","rules":[{"match":"x","policy":"nope"}],"zz":1}`,
}

// qemuNBDObject runs qemu-nbd 7.2 with one --object and an image that does not exist: an
// object it refuses stops it with the object's message, one it accepts lets it go on to
// fail opening the image. It returns the message, or "" when the object was accepted.
// qemu-nbd listens before it opens the image, so it gets a socket of its own: on the
// default TCP port 10809 it would fail whenever another test or program holds that port.
func qemuNBDObject(t *testing.T, arg, missing string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s")
	out, _ := tool(t, "qemu-nbd", "-k", sock, "--object", arg, missing).CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	msg, ok := strings.CutPrefix(line, "qemu-nbd: ")
	if !ok {
		t.Fatalf("qemu-nbd --object %s: unexpected output %q", arg, out)
	}
	if strings.HasPrefix(msg, "Failed to blk_new_open '"+missing+"'") {
		return ""
	}
	return msg
}

// TestObjectErrorsAreQemuNBDs builds each object and checks that it is accepted exactly
// when qemu-nbd 7.2 accepts it, and refused with qemu-nbd's message otherwise.
func TestObjectErrorsAreQemuNBDs(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.img")
	for _, arg := range objectCases {
		want := qemuNBDObject(t, arg, missing)
		typ, id, props, form := objectProps(t, arg)
		a, err := Build(typ, id, props, Options{Form: form})
		got := ""
		switch {
		case err != nil && a != nil:
			t.Errorf("%s: an authorizer (%#v) with the error", arg, a)
		case err != nil:
			got = err.Error()
		case a == nil:
			t.Errorf("%s: no authorizer and no error", arg)
		}
		if got != want {
			t.Errorf("%s:\nqemu-nbd %q\n     ours %q", arg, want, got)
		}
		if inferred := InferForm(props); form == Keyval && inferred != Keyval {
			t.Errorf("%s: key=value properties inferred as JSON", arg)
		}
	}
}

// TestListFilePropertiesAreQemuNBDs checks authz-list-file's own properties against
// qemu-nbd 7.2's QAPI checks of authz-listfile: qemu-nbd validates them and only then
// finds it cannot create the object ("invalid object type"), which is where we go on to
// load the file.
func TestListFilePropertiesAreQemuNBDs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "acl.json")
	writeFile(t, file, `{"rules": [{"match": "CN=a", "policy": "allow"}]}`)
	missing := filepath.Join(dir, "missing.img")
	for _, arg := range []string{
		"authz-listfile,id=a",
		"authz-listfile,id=a,refresh=off",
		"authz-listfile,id=a,filename=" + file,
		"authz-listfile,id=a,filename=" + file + ",refresh=off",
		"authz-listfile,id=a,filename=" + file + ",refresh=yes",
		"authz-listfile,id=a,filename=" + file + ",refresh=n",
		"authz-listfile,id=a,filename=" + file + ",refresh=maybe",
		"authz-listfile,id=a,filename=" + file + ",refresh=OFF",
		"authz-listfile,id=a,filename=" + file + ",refresh.x=1",
		"authz-listfile,id=a,filename=" + file + ",foo=1",
		"authz-listfile,id=a,filename.x=" + file,
		`{"qom-type":"authz-listfile","id":"a","filename":"` + file + `","refresh":false}`,
		`{"qom-type":"authz-listfile","id":"a","filename":"` + file + `","refresh":"on"}`,
		`{"qom-type":"authz-listfile","id":"a","filename":"` + file + `","refresh":1}`,
		`{"qom-type":"authz-listfile","id":"a","filename":1}`,
		`{"qom-type":"authz-listfile","id":"a","refresh":true}`,
		`{"qom-type":"authz-listfile","id":"a","filename":"` + file + `","x":1}`,
	} {
		want := qemuNBDObject(t, arg, missing)
		if want == "invalid object type: authz-listfile" {
			want = ""
		}
		typ, id, props, form := objectProps(t, arg)
		a, err := Build(typ, id, props, Options{Form: form})
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			if !a.Allow("CN=a") || a.Allow("CN=b") {
				t.Errorf("%s: the file's rules are not in force", arg)
			}
			if c, ok := a.(Closer); ok {
				_ = c.Close()
			}
		}
		if got != want {
			t.Errorf("%s:\nqemu-nbd %q\n     ours %q", arg, want, got)
		}
	}
}
