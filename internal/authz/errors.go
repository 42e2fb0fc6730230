package authz

import "fmt"

// Error is a refusal worded as QEMU words it (capitalised, sometimes ending in a full
// stop), without the program-name prefix, which the caller adds.
type Error string

func (e Error) Error() string { return string(e) }

// errorf builds an Error.
func errorf(format string, args ...any) error { return Error(fmt.Sprintf(format, args...)) }
