package authz

import (
	"log/slog"
)

// The object types FromObject builds. TypeListFileQAPI is the name QEMU's QAPI schema
// gives authz-list-file; both spellings are accepted (docs/authz.md, "authz-list-file").
const (
	TypeSimple       = "authz-simple"
	TypeList         = "authz-list"
	TypeListFile     = "authz-list-file"
	TypeListFileQAPI = "authz-listfile"
)

// IsType reports whether typ is one of the authorisation object types this package builds,
// so that an --object parser can route the object here.
func IsType(typ string) bool {
	switch typ {
	case TypeSimple, TypeList, TypeListFile, TypeListFileQAPI:
		return true
	}
	return false
}

// Options tune Build.
type Options struct {
	// Form is the spelling the properties came in (Keyval or JSON).
	Form Form
	// Logger receives the one line an authz-list-file logs when a reload triggered by
	// inotify fails. Nil means slog.Default().
	Logger *slog.Logger
}

// FromObject builds the authorizer of one --object whose qom-type is typ, from its
// properties other than qom-type and id, in the nested form a parsed --object takes
// (dotted keys already nested; see Form). The form is inferred with InferForm; a caller
// that knows it should use Build. Errors carry QEMU's wording and name no program (the
// caller prefixes it).
func FromObject(typ, id string, props map[string]any) (Authorizer, error) {
	return Build(typ, id, props, Options{Form: InferForm(props)})
}

// Build is FromObject with the form and logger given explicitly.
func Build(typ, id string, props map[string]any, opt Options) (Authorizer, error) {
	v := visitor{form: opt.Form}
	var a Authorizer
	var err error
	switch typ {
	case TypeSimple:
		a, err = buildSimple(v, props)
	case TypeList:
		a, err = buildList(v, props)
	case TypeListFile, TypeListFileQAPI:
		a, err = buildListFile(v, id, props, opt.Logger)
	default:
		err = errorf("invalid object type: %s", typ)
	}
	if err != nil {
		return nil, err // never a typed nil inside the interface
	}
	return a, nil
}

func buildSimple(v visitor, props map[string]any) (*Simple, error) {
	identity, err := v.mandatoryStr(props, "", "identity")
	if err != nil {
		return nil, err
	}
	if err := v.onlyKnown(props, "", "identity"); err != nil {
		return nil, err
	}
	return &Simple{Identity: identity}, nil
}

// buildList reads AuthZListProperties: policy (default deny), then rules, then strays.
func buildList(v visitor, props map[string]any) (*List, error) {
	policy, err := v.enum(props, "", "policy", policyNames, int(Deny))
	if err != nil {
		return nil, err
	}
	l := &List{Policy: Policy(policy)}
	items, _, err := v.list(props, "", "rules")
	if err != nil {
		return nil, err
	}
	for i, item := range items {
		r, err := buildRule(v, v.element("rules", i), item)
		if err != nil {
			return nil, err
		}
		l.Rules = append(l.Rules, r)
	}
	if err := v.onlyKnown(props, "", "policy", "rules"); err != nil {
		return nil, err
	}
	return l, nil
}

// buildRule reads one QAuthZListRule: match, policy (both mandatory), format (default
// exact), then strays.
func buildRule(v visitor, name string, item any) (Rule, error) {
	obj, err := v.structOf(name, item)
	if err != nil {
		return Rule{}, err
	}
	match, err := v.mandatoryStr(obj, name, "match")
	if err != nil {
		return Rule{}, err
	}
	if _, present := obj["policy"]; !present {
		return Rule{}, errMissing(v.member(name, "policy"))
	}
	policy, err := v.enum(obj, name, "policy", policyNames, 0)
	if err != nil {
		return Rule{}, err
	}
	format, err := v.enum(obj, name, "format", formatNames, int(Exact))
	if err != nil {
		return Rule{}, err
	}
	if err := v.onlyKnown(obj, name, "match", "policy", "format"); err != nil {
		return Rule{}, err
	}
	return Rule{Match: match, Policy: Policy(policy), Format: Format(format)}, nil
}

// buildListFile reads AuthZListFileProperties: filename (mandatory), refresh (default on),
// then strays; then loads the file and, with refresh, starts watching it.
func buildListFile(v visitor, id string, props map[string]any, log *slog.Logger) (*ListFile, error) {
	filename, err := v.mandatoryStr(props, "", "filename")
	if err != nil {
		return nil, err
	}
	refresh, err := v.boolean(props, "", "refresh", true)
	if err != nil {
		return nil, err
	}
	if err := v.onlyKnown(props, "", "filename", "refresh"); err != nil {
		return nil, err
	}
	return OpenListFile(id, filename, refresh, log)
}
