package authz

// Rule is one entry of an authz-list: when Match matches the identity (as Format says),
// the answer is Policy and later rules are not looked at.
type Rule struct {
	Match  string
	Policy Policy
	Format Format
}

// Matches reports whether the rule applies to identity.
func (r Rule) Matches(identity string) bool {
	if r.Format == Glob {
		return Match(r.Match, identity)
	}
	return r.Match == identity
}

// List is authz-list: the first matching rule decides; with none, Policy does. A List is
// immutable once built, so Allow needs no lock.
type List struct {
	Policy Policy
	Rules  []Rule
}

// Allow walks the rules in order, as QEMU's authz-list does.
func (l *List) Allow(identity string) bool {
	for _, r := range l.Rules {
		if r.Matches(identity) {
			return r.Policy == Allow
		}
	}
	return l.Policy == Allow
}
