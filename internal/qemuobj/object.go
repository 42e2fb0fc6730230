// Object, Parse and the checks QEMU makes on qom-type and id.
package qemuobj

import (
	"fmt"
	"strings"
)

// Object is one parsed --object.
type Object struct {
	Type string
	ID   string
	// Props holds the other properties in JSON-like form: string, bool, float64, nil,
	// []any and map[string]any. Keyval gives only strings, maps and lists.
	Props map[string]any
	// Keyval reports the key=value syntax (every scalar is a string) rather than JSON.
	Keyval bool
}

// knownTypes are the user-creatable object types of qemu-nbd 7.2 ("--object help"; its
// qom-type check knows authz-list-file as authz-listfile, and qnbd takes both).
var knownTypes = map[string]bool{
	"authz-list": true, "authz-list-file": true, "authz-listfile": true, "authz-simple": true, "iothread": true,
	"main-loop": true, "pr-manager-helper": true, "secret": true, "secret_keyring": true,
	"thread-context": true, "throttle-group": true, "tls-cipher-suites": true,
	"tls-creds-anon": true, "tls-creds-psk": true, "tls-creds-x509": true,
}

// Known reports whether QEMU 7.2 knows the object type typ.
func Known(typ string) bool { return knownTypes[typ] }

// Parse parses one --object argument.
func Parse(arg string) (*Object, error) {
	var props map[string]any
	keyval := !strings.HasPrefix(arg, "{")
	var err error
	if keyval {
		props, err = parseKeyval(arg, "qom-type")
	} else {
		props, err = parseJSON(arg)
	}
	if err != nil {
		return nil, err
	}
	o := &Object{Props: props, Keyval: keyval}
	if o.Type, err = o.takeString("qom-type"); err != nil {
		return nil, err
	}
	if !knownTypes[o.Type] {
		return nil, errorf("Parameter 'qom-type' does not accept value '%s'", o.Type)
	}
	if o.ID, err = o.takeString("id"); err != nil {
		return nil, err
	}
	if !wellFormedID(o.ID) {
		return nil, errorf("Parameter 'id' expects an identifier\n" +
			"Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.")
	}
	return o, nil
}

// takeString removes a required string member from Props.
func (o *Object) takeString(key string) (string, error) {
	v, ok, err := o.String(key)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", errorf("Parameter '%s' is missing", key)
	}
	delete(o.Props, key)
	return v, nil
}

// wellFormedID is QEMU's id_wellformed: a letter, then letters, digits, '-', '.', '_'.
func wellFormedID(id string) bool {
	if id == "" || !isAlpha(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		c := id[i]
		if !isAlpha(c) && !isDigit(c) && c != '-' && c != '.' && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// Set collects objects by id, refusing a duplicate as QEMU does.
type Set struct {
	byID  map[string]*Object
	order []*Object
}

// Add adds o, or fails when its id is taken.
func (s *Set) Add(o *Object) error {
	if s.byID == nil {
		s.byID = map[string]*Object{}
	}
	if s.byID[o.ID] != nil {
		return errorf("attempt to add duplicate property '%s' to object (type 'container')", o.ID)
	}
	s.byID[o.ID] = o
	s.order = append(s.order, o)
	return nil
}

// Get returns the object with this id, nil if none.
func (s *Set) Get(id string) *Object { return s.byID[id] }

// All returns the objects in the order they were added.
func (s *Set) All() []*Object { return s.order }

// Error is a refused --object, worded as QEMU words it (capitalised, sometimes two lines).
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

func errorf(format string, args ...any) error {
	return &Error{msg: fmt.Sprintf(format, args...)}
}
