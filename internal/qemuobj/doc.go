// Package qemuobj parses qemu-nbd's --object argument into an Object, accepting what QEMU 7.2
// accepts (docs/object-syntax.md):
//
//   - key=value pairs, QEMU's "keyval" syntax: the first item may omit "qom-type=", ",,"
//     stands for a comma inside a value, dotted keys build nested objects and keys that are
//     all decimal indexes build lists ("rules.0.match=a" gives
//     {"rules": [{"match": "a"}]}); every value is a string;
//   - a JSON object when the argument starts with '{'; values keep their JSON types.
//
// Parse checks what QEMU checks before it knows the object type's own properties: syntax,
// qom-type (present, a string, a type QEMU 7.2 knows) and id (present, a string, a well-formed
// identifier), and each error reads as QEMU's. The properties of a type are its consumer's
// business: the helpers String, Bool and CheckUnexpected give the consumer QEMU's wording for
// missing, ill-typed and unknown properties in either syntax. Set tracks ids across several
// --object options and refuses a duplicate as QEMU does.
package qemuobj
