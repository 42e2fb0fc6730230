// Store: the credentials in use, swapped whole on a successful reload.
package tlscreds

import (
	"crypto/tls"
	"sync/atomic"
	"time"
)

// Store holds the current credentials of one Spec.
type Store struct {
	spec *Spec
	cur  atomic.Pointer[Creds]
}

// NewStore loads s.
func NewStore(s *Spec) (*Store, error) {
	c, err := Load(s, time.Now())
	if err != nil {
		return nil, err
	}
	st := &Store{spec: s}
	st.cur.Store(c)
	return st, nil
}

// Config is the configuration for a new TLS handshake (server.Config.TLSConfig).
func (st *Store) Config() *tls.Config { return st.cur.Load().Config }

// Reload loads the files again; on failure the previous credentials stay in use and the
// error says why. Sessions already running keep the credentials they started with.
func (st *Store) Reload() error {
	c, err := Load(st.spec, time.Now())
	if err != nil {
		return err
	}
	st.cur.Store(c)
	return nil
}
