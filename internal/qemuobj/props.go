// Typed access to properties with QEMU's messages for either syntax.
package qemuobj

import (
	"sort"
)

// String returns the string property key; ok is false when it is absent.
func (o *Object) String(key string) (v string, ok bool, err error) {
	raw, ok := o.Props[key]
	if !ok {
		return "", false, nil
	}
	s, isStr := raw.(string)
	if !isStr {
		return "", true, errorf("Invalid parameter type for '%s', expected: string", key)
	}
	return s, true, nil
}

// Bool returns the boolean property key, or def when it is absent. Keyval takes QEMU's
// spellings (on/off, yes/no, true/false, y/n); JSON takes a JSON boolean.
func (o *Object) Bool(key string, def bool) (bool, error) {
	raw, ok := o.Props[key]
	if !ok {
		return def, nil
	}
	if b, isBool := raw.(bool); isBool && !o.Keyval {
		return b, nil
	}
	s, isStr := raw.(string)
	if !o.Keyval || !isStr {
		return false, errorf("Invalid parameter type for '%s', expected: boolean", key)
	}
	switch s {
	case "on", "yes", "true", "y":
		return true, nil
	case "off", "no", "false", "n":
		return false, nil
	}
	return false, errorf("Parameter '%s' expects 'on' or 'off'", key)
}

// Enum returns the string property key, which must be one of values, or def when absent.
func (o *Object) Enum(key, def string, values ...string) (string, error) {
	v, ok, err := o.String(key)
	if err != nil || !ok {
		return def, err
	}
	for _, w := range values {
		if v == w {
			return v, nil
		}
	}
	return "", errorf("Parameter '%s' does not accept value '%s'", key, v)
}

// CheckUnexpected fails on the first property (in sorted order) that is not in known, as
// QEMU fails on a property its object type does not have.
func (o *Object) CheckUnexpected(known ...string) error {
	k := map[string]bool{}
	for _, s := range known {
		k[s] = true
	}
	var bad []string
	for p := range o.Props {
		if !k[p] {
			bad = append(bad, p)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	return errorf("Parameter '%s' is unexpected", bad[0])
}
