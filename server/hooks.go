// Hooks: how an observer (the metrics package) learns what the server does, without this
// package importing it.
package server

import "time"

// Op is an NBD command as the hooks report it.
type Op uint8

// Ops reported to Hooks.
const (
	OpRead Op = iota
	OpWrite
	OpFlush
	OpTrim
	OpCache
	OpWriteZeroes
	OpBlockStatus
	OpDisc
	NumOps
)

var opNames = [NumOps]string{"read", "write", "flush", "trim", "cache", "write_zeroes", "block_status", "disc"}

func (o Op) String() string {
	if o < NumOps {
		return opNames[o]
	}
	return "unknown"
}

// HandshakeResult classifies how a handshake ended.
type HandshakeResult uint8

// Handshake results reported to Hooks.
const (
	HandshakeOK          HandshakeResult = iota // the client reached transmission
	HandshakeAborted                            // NBD_OPT_ABORT, or a clean close during options
	HandshakeTimeout                            // the handshake limit expired
	HandshakeRejected                           // protocol violation, unknown export, policy
	HandshakeError                              // I/O error on the socket
	HandshakeTLSRequired                        // TLS is required: a plaintext client was refused
	HandshakeTLSFailed                          // the TLS handshake failed (untrusted or no certificate, not TLS)
	HandshakeAuthzDenied                        // TLS succeeded but the client's identity is not authorised
	NumHandshakeResults
)

var handshakeNames = [NumHandshakeResults]string{"ok", "aborted", "timeout", "rejected", "error",
	"tls_required", "tls_failed", "authz_denied"}

func (r HandshakeResult) String() string {
	if r < NumHandshakeResults {
		return handshakeNames[r]
	}
	return "unknown"
}

// ServerHooks receives events that belong to no export yet. A nil ServerHooks in Config means
// no observer. Methods must be safe for concurrent use, fast, and must not block.
type ServerHooks interface {
	// Handshake reports a finished handshake; export is "" when none was selected.
	Handshake(export string, r HandshakeResult)
}

// ExportHooks receives one export's events; each export has its own value, so an observer
// resolves its labels once, not per request. Methods are called synchronously on the hot path
// from many goroutines: implementations must be safe for concurrent use, fast, and must not
// block. A nil ExportHooks on an Export means no observer.
type ExportHooks interface {
	// ConnOpened and ConnClosed bracket a connection in transmission on the export.
	ConnOpened()
	ConnClosed()
	// RequestStarted reports a request taken off the wire (header and payload), before it
	// runs; one cut off by its client's disconnect is reported neither started nor done.
	RequestStarted(op Op)
	// RequestDone reports a finished request: its payload bytes (read or written, or the
	// effect length for TRIM/WRITE_ZEROES/CACHE), its duration, and its NBD errno (0 = ok).
	RequestDone(op Op, bytes uint64, d time.Duration, errno uint32)
}
