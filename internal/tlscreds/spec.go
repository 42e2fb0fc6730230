// Spec: the tls-creds-x509 object's properties, checked as QEMU checks them.
package tlscreds

import (
	"fmt"

	"github.com/qnbd/qnbd/internal/qemuobj"
)

// Spec is a tls-creds-x509 object.
type Spec struct {
	ID          string
	Dir         string
	Server      bool // endpoint=server (QEMU's default endpoint is client)
	VerifyPeer  bool // default on
	SanityCheck bool // default on
}

// SpecFromObject reads o, a tls-creds-x509 object.
func SpecFromObject(o *qemuobj.Object) (*Spec, error) {
	s := &Spec{ID: o.ID}
	var err error
	if err = o.CheckUnexpected("dir", "endpoint", "verify-peer", "sanity-check", "priority", "passwordid"); err != nil {
		return nil, err
	}
	ep, err := o.Enum("endpoint", "client", "client", "server")
	if err != nil {
		return nil, err
	}
	s.Server = ep == "server"
	if s.VerifyPeer, err = o.Bool("verify-peer", true); err != nil {
		return nil, err
	}
	if s.SanityCheck, err = o.Bool("sanity-check", true); err != nil {
		return nil, err
	}
	if _, ok := o.Props["priority"]; ok {
		return nil, fmt.Errorf("tls-creds-x509 '%s': priority= (a GnuTLS priority string) is not supported: "+
			"qnbd uses Go's TLS, with TLS 1.3 preferred and TLS 1.2 the minimum", o.ID)
	}
	if _, ok := o.Props["passwordid"]; ok {
		return nil, fmt.Errorf("tls-creds-x509 '%s': passwordid= (an encrypted private key) is not supported: "+
			"give server-key.pem unencrypted, readable only by qnbd", o.ID)
	}
	dir, ok, err := o.String("dir")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, qemuError("Missing 'dir' property value")
	}
	s.Dir = dir
	return s, nil
}

// Error is a credentials failure worded as QEMU words it.
type Error struct{ msg string }

func (e *Error) Error() string { return e.msg }

func qemuError(format string, args ...any) error { return &Error{msg: fmt.Sprintf(format, args...)} }
