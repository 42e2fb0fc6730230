// TLS on the command line: --object (tls-creds-x509 and the authz objects), --tls-creds,
// --tls-authz and --tls-hostname, checked in qemu-nbd's order and words (docs/tls.md).
package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"

	"github.com/qnbd/qnbd/internal/authz"
	"github.com/qnbd/qnbd/internal/qemuobj"
	"github.com/qnbd/qnbd/internal/tlscreds"
)

// tlsSetup is what the TLS options set up.
type tlsSetup struct {
	objects  qemuobj.Set
	creds    map[string]*tlscreds.Store // tls-creds-x509 objects with endpoint=server
	authz    map[string]authz.Authorizer
	credsID  string // --tls-creds
	authzID  string // --tls-authz
	hostname string // --tls-hostname
}

// addObject creates one --object as qemu-nbd does while it reads its options: the object's
// files are loaded at once, so a bad one stops the program before anything else happens.
func (ts *tlsSetup) addObject(arg string) error {
	o, err := qemuobj.Parse(arg)
	if err != nil {
		return err
	}
	switch {
	case o.Type == "tls-creds-x509":
		spec, err := tlscreds.SpecFromObject(o)
		if err != nil {
			return err
		}
		if err := ts.objects.Add(o); err != nil {
			return err
		}
		if !spec.Server {
			return tlscreds.CheckClient(spec) // refused if --tls-creds names it
		}
		st, err := tlscreds.NewStore(spec)
		if err != nil {
			return err
		}
		if ts.creds == nil {
			ts.creds = map[string]*tlscreds.Store{}
		}
		ts.creds[o.ID] = st
		return nil
	case authz.IsType(o.Type):
		form := authz.Keyval
		if !o.Keyval {
			form = authz.JSON
		}
		a, err := authz.Build(o.Type, o.ID, o.Props, authz.Options{Form: form, Logger: slog.Default()})
		if err != nil {
			return err
		}
		if err := ts.objects.Add(o); err != nil {
			if c, ok := a.(authz.Closer); ok {
				c.Close()
			}
			return err
		}
		if ts.authz == nil {
			ts.authz = map[string]authz.Authorizer{}
		}
		ts.authz[o.ID] = a
		return nil
	case o.Type == "tls-creds-anon":
		return errors.New("--object tls-creds-anon: anonymous TLS (no certificates, no authentication) " +
			"is not supported by qnbd; use tls-creds-x509")
	case o.Type == "tls-creds-psk":
		return errors.New("--object tls-creds-psk: TLS-PSK is not supported by qnbd (Go's crypto/tls has " +
			"no pre-shared-key cipher suites); use tls-creds-x509")
	}
	return fmt.Errorf("--object %s: this object type is not supported by qnbd", o.Type)
}

// check makes qemu-nbd's checks of --tls-creds, --tls-authz and --tls-hostname once every
// option has been read.
func (ts *tlsSetup) check() error {
	if ts.credsID == "" {
		switch {
		case ts.authzID != "":
			return errors.New("--tls-authz is not permitted without --tls-creds")
		case ts.hostname != "":
			return errors.New("--tls-hostname is not permitted without --tls-creds")
		}
		return nil
	}
	if ts.hostname != "" {
		return errors.New("TLS hostname is only supported with export list")
	}
	o := ts.objects.Get(ts.credsID)
	switch {
	case o == nil:
		return qemuErrorf("Failed to get TLS creds: No TLS credentials with id '%s'", ts.credsID)
	case o.Type != "tls-creds-x509":
		return qemuErrorf("Failed to get TLS creds: Object with id '%s' is not TLS credentials", ts.credsID)
	case ts.creds[ts.credsID] == nil:
		return qemuErrorf("Failed to get TLS creds: Expected TLS credentials for a server endpoint")
	}
	return nil
}

// store is the credentials --tls-creds names; nil without TLS.
func (ts *tlsSetup) store() *tlscreds.Store {
	if ts == nil || ts.credsID == "" {
		return nil
	}
	return ts.creds[ts.credsID]
}

// tlsConfig is server.Config.TLSConfig: nil without --tls-creds.
func (ts *tlsSetup) tlsConfig() func() *tls.Config {
	if st := ts.store(); st != nil {
		return st.Config
	}
	return nil
}

// authorize is server.Config.Authorize for --tls-authz. As in qemu-nbd, the id is resolved
// when a client connects (an unknown id refuses every client), and a client is checked only
// when its certificate was verified (verify-peer=on, the default).
func (ts *tlsSetup) authorize() func(tls.ConnectionState) error {
	if ts.store() == nil || ts.authzID == "" {
		return nil
	}
	id := ts.authzID
	return func(st tls.ConnectionState) error {
		if len(st.VerifiedChains) == 0 {
			return nil
		}
		a := ts.authz[id]
		if a == nil {
			if ts.objects.Get(id) == nil {
				return qemuErrorf("Cannot find QAuthZ object ID %s", id)
			}
			return qemuErrorf("Object '%s' is not a QAuthZ subclass", id)
		}
		return authz.Check(a, st.PeerCertificates[0])
	}
}

// reload is SIGHUP with TLS: the credentials, their CRL and every file-based authz list are
// read again; whatever fails to load keeps its previous state and is logged in one line.
func (ts *tlsSetup) reload(log *slog.Logger) {
	if st := ts.store(); st != nil {
		if err := st.Reload(); err != nil {
			log.Error("qnbd: SIGHUP: TLS credentials not reloaded; keeping the previous ones",
				"id", ts.credsID, "err", err)
		} else {
			log.Info("qnbd: SIGHUP: TLS credentials reloaded", "id", ts.credsID)
		}
	}
	for id, a := range ts.authz {
		if r, ok := a.(authz.Reloader); ok {
			if err := r.Reload(); err != nil {
				log.Error("qnbd: SIGHUP: authz rules not reloaded; keeping the previous ones", "id", id, "err", err)
			}
		}
	}
}

// close stops the authorizers that hold resources.
func (ts *tlsSetup) close() {
	for _, a := range ts.authz {
		if c, ok := a.(authz.Closer); ok {
			c.Close()
		}
	}
}

// qemuError is a message in QEMU's words, capitalised as QEMU writes it.
type qemuError struct{ msg string }

func (e *qemuError) Error() string { return e.msg }

func qemuErrorf(format string, args ...any) error {
	return &qemuError{msg: fmt.Sprintf(format, args...)}
}
