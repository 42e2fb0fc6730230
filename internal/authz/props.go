package authz

import (
	"fmt"
	"slices"
	"strconv"
)

// Form says which of the two spellings of --object the properties came from. They differ
// in how values are typed and in how a list element is named in messages, exactly as
// QEMU's QAPI input visitor differs (docs/authz.md, "Object properties").
type Form uint8

const (
	// Keyval is the key=value form: every scalar is a string ("on", "allow", "5"), and the
	// n-th list element is named "rules.n".
	Keyval Form = iota
	// JSON is the {"qom-type": ...} form: scalars carry JSON types (string, bool,
	// float64), and the n-th list element is named "rules[n]".
	JSON
)

// InferForm guesses the form of props: JSON if any scalar is not a string (only the JSON
// form can produce one), Keyval otherwise. A JSON object whose values are all strings is
// taken as Keyval, which accepts every such object JSON accepts except a string where a
// boolean is expected, and names list elements "rules.n"; callers that know the form should
// say so with Options.Form.
func InferForm(props map[string]any) Form {
	if allStrings(props) {
		return Keyval
	}
	return JSON
}

func allStrings(v any) bool {
	switch v := v.(type) {
	case string:
		return true
	case map[string]any:
		for _, e := range v {
			if !allStrings(e) {
				return false
			}
		}
		return true
	case []any:
		for _, e := range v {
			if !allStrings(e) {
				return false
			}
		}
		return true
	}
	return false
}

// visitor walks one object's properties the way QEMU's QAPI input visitor walks them:
// members in schema order, a missing mandatory member or a wrongly typed one reported by
// its full name, and members nobody asked for reported once the struct is done.
type visitor struct {
	form Form
}

// member names member m of the struct at path parent.
func (v visitor) member(parent, m string) string {
	if parent == "" {
		return m
	}
	return parent + "." + m
}

// element names element i of the list at path parent.
func (v visitor) element(parent string, i int) string {
	if v.form == JSON {
		return parent + "[" + strconv.Itoa(i) + "]"
	}
	return parent + "." + strconv.Itoa(i)
}

func errMissing(name string) error {
	return errorf("Parameter '%s' is missing", name)
}

func errUnexpected(name string) error {
	return errorf("Parameter '%s' is unexpected", name)
}

func errType(name, want string) error {
	return errorf("Invalid parameter type for '%s', expected: %s", name, want)
}

// structOf checks that val (at path name) is an object.
func (v visitor) structOf(name string, val any) (map[string]any, error) {
	m, ok := val.(map[string]any)
	if !ok {
		return nil, errType(name, "object")
	}
	return m, nil
}

// str reads the string member m of obj; ok is false when it is absent.
func (v visitor) str(obj map[string]any, parent, m string) (s string, ok bool, err error) {
	val, present := obj[m]
	if !present {
		return "", false, nil
	}
	s, isStr := val.(string)
	if !isStr {
		return "", false, v.notScalar(v.member(parent, m), val, "string")
	}
	return s, true, nil
}

// notScalar is the error for a non-string where a scalar is expected. In key=value form
// that can only be an object or a list (keys below the scalar's), which QEMU's keyval
// visitor reports as stray keys; in JSON form it is a type error naming want.
func (v visitor) notScalar(name string, val any, want string) error {
	if v.form == Keyval {
		switch val.(type) {
		case map[string]any, []any:
			return errorf("Parameters '%s.*' are unexpected", name)
		}
	}
	return errType(name, want)
}

// mandatoryStr reads a string member that must be present.
func (v visitor) mandatoryStr(obj map[string]any, parent, m string) (string, error) {
	s, ok, err := v.str(obj, parent, m)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errMissing(v.member(parent, m))
	}
	return s, nil
}

// enum reads an enumeration member; absent gives def. A value outside names is refused
// with the member's bare name, as QEMU's visit_type_enum words it.
func (v visitor) enum(obj map[string]any, parent, m string, names []string, def int) (int, error) {
	s, ok, err := v.str(obj, parent, m)
	if err != nil || !ok {
		return def, err
	}
	i := slices.Index(names, s)
	if i < 0 {
		return 0, errorf("Parameter '%s' does not accept value '%s'", m, s)
	}
	return i, nil
}

// boolean reads a boolean member; absent gives def. Keyval spells it as QEMU's
// qapi_bool_parse accepts; JSON needs a JSON boolean.
func (v visitor) boolean(obj map[string]any, parent, m string, def bool) (bool, error) {
	val, present := obj[m]
	if !present {
		return def, nil
	}
	name := v.member(parent, m)
	if v.form == JSON {
		b, ok := val.(bool)
		if !ok {
			return false, errType(name, "boolean")
		}
		return b, nil
	}
	s, ok := val.(string)
	if !ok {
		return false, v.notScalar(name, val, "boolean")
	}
	switch s {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	return false, errorf("Parameter '%s' expects 'on' or 'off'", name)
}

// list reads a list member; ok is false when it is absent.
func (v visitor) list(obj map[string]any, parent, m string) (l []any, ok bool, err error) {
	val, present := obj[m]
	if !present {
		return nil, false, nil
	}
	l, isList := val.([]any)
	if !isList {
		return nil, false, errType(v.member(parent, m), "array")
	}
	return l, true, nil
}

// onlyKnown refuses a member of obj that is not in known. QEMU reports whichever stray
// member its hash table yields first; with several, we name the first in byte order.
func (v visitor) onlyKnown(obj map[string]any, parent string, known ...string) error {
	var stray []string
	for k := range obj {
		if !slices.Contains(known, k) {
			stray = append(stray, k)
		}
	}
	if len(stray) == 0 {
		return nil
	}
	slices.Sort(stray)
	return errUnexpected(v.member(parent, stray[0]))
}

func (f Form) String() string {
	switch f {
	case Keyval:
		return "key=value"
	case JSON:
		return "JSON"
	}
	return fmt.Sprintf("Form(%d)", uint8(f))
}
