package authz

// Simple is authz-simple: exactly one identity is allowed, compared byte for byte.
type Simple struct {
	Identity string
}

// Allow reports whether identity is the allowed one.
func (s *Simple) Allow(identity string) bool { return identity == s.Identity }
