// Fault injection: the Injector hook and Rule, which fails the n-th matching operation.
package memstore

import (
	"sync"
	"syscall"
)

// Injector decides whether an operation fails. MaybeError is called, with the store's lock
// held, before every ReadAt, WriteAt, Sync, Truncate and PunchHole; a non-nil result is
// returned to the caller and the operation has no effect. Implementations must not call back
// into the store.
type Injector interface {
	MaybeError(op Op) error
}

// InjectorFunc adapts a function to Injector.
type InjectorFunc func(Op) error

// MaybeError calls f.
func (f InjectorFunc) MaybeError(op Op) error { return f(op) }

// Inject installs inj (nil removes the current injector).
func (s *Store) Inject(inj Injector) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inj = inj
}

// Rule fails the Nth operation of kind Kind (counted from 1, among those Match accepts) with
// Err, and, if Persistent, every later matching one as well. It is safe for concurrent use.
type Rule struct {
	Kind OpKind
	// Nth is the 1-based index of the first matching operation to fail; 0 means 1.
	Nth int
	// Err is the error returned; nil means syscall.EIO.
	Err error
	// Persistent keeps failing every matching operation after the Nth (a dead disk, a full
	// file system); otherwise only the Nth fails (a transient error).
	Persistent bool
	// Match, if set, restricts the rule to the operations it returns true for (a byte range,
	// say); others neither fail nor count.
	Match func(Op) bool

	mu   sync.Mutex
	seen int
}

// MaybeError implements Injector.
func (r *Rule) MaybeError(op Op) error {
	if op.Kind != r.Kind || (r.Match != nil && !r.Match(op)) {
		return nil
	}
	r.mu.Lock()
	r.seen++
	seen := r.seen
	r.mu.Unlock()
	nth := max(r.Nth, 1)
	if seen == nth || (r.Persistent && seen > nth) {
		if r.Err != nil {
			return r.Err
		}
		return syscall.EIO
	}
	return nil
}

// Seen returns how many matching operations the rule has counted.
func (r *Rule) Seen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen
}

// Rules combines injectors, consulted in order: the first non-nil error wins, and the rules
// after it do not see (or count) that operation.
type Rules []Injector

// MaybeError implements Injector.
func (rs Rules) MaybeError(op Op) error {
	for _, r := range rs {
		if err := r.MaybeError(op); err != nil {
			return err
		}
	}
	return nil
}
