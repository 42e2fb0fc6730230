package authz

import "fmt"

// Authorizer decides whether a client identity (for TLS, the certificate's subject DN as
// rendered by DN) may use the server. Allow is safe for concurrent use, including while a
// ListFile reloads its rules.
type Authorizer interface {
	Allow(identity string) bool
}

// Reloader is implemented by authorizers whose rules live outside the command line
// (authz-list-file). Reload re-reads them; on failure the previous rules stay in force and
// the error says why.
type Reloader interface {
	Reload() error
}

// Closer is implemented by authorizers that hold resources (the inotify watch of
// authz-list-file). Close stops them; Allow keeps answering with the last rules.
type Closer interface {
	Close() error
}

// Policy is the result of a matching rule, or of a list when no rule matches.
type Policy uint8

// The policies, named as QAPI's QAuthZListPolicy.
const (
	Deny Policy = iota
	Allow
)

func (p Policy) String() string {
	switch p {
	case Deny:
		return "deny"
	case Allow:
		return "allow"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

// Format says how a rule's match string is compared with an identity.
type Format uint8

// The formats, named as QAPI's QAuthZListFormat.
const (
	// Exact compares byte for byte.
	Exact Format = iota
	// Glob matches as GLib's g_pattern_match_simple: see Match.
	Glob
)

func (f Format) String() string {
	switch f {
	case Exact:
		return "exact"
	case Glob:
		return "glob"
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

var policyNames = []string{"deny", "allow"}
var formatNames = []string{"exact", "glob"}
