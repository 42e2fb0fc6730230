// Settings made before connecting: export name, structured replies, meta contexts, TLS, modes.
package libnbd

/*
#include <stdlib.h>
#include <libnbd.h>
*/
import "C"

import "unsafe"

// TLS modes for SetTLS (LIBNBD_TLS_*).
const (
	TLSDisable = int(C.LIBNBD_TLS_DISABLE)
	TLSAllow   = int(C.LIBNBD_TLS_ALLOW)
	TLSRequire = int(C.LIBNBD_TLS_REQUIRE)
)

// Strict-mode bits for SetStrictMode (LIBNBD_STRICT_*). Clearing them lets a test send
// requests that libnbd would otherwise refuse locally, to see what the server does.
const (
	StrictCommands = uint32(C.LIBNBD_STRICT_COMMANDS)
	StrictFlags    = uint32(C.LIBNBD_STRICT_FLAGS)
	StrictBounds   = uint32(C.LIBNBD_STRICT_BOUNDS)
	StrictZeroSize = uint32(C.LIBNBD_STRICT_ZERO_SIZE)
	StrictAlign    = uint32(C.LIBNBD_STRICT_ALIGN)
)

// Handshake flags for SetHandshakeFlags (LIBNBD_HANDSHAKE_FLAG_*).
const (
	HandshakeFixedNewstyle = uint32(C.LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE)
	HandshakeNoZeroes      = uint32(C.LIBNBD_HANDSHAKE_FLAG_NO_ZEROES)
)

// Well-known metadata context names.
const (
	ContextBaseAllocation      = "base:allocation"
	ContextQemuAllocationDepth = "qemu:allocation-depth"
)

// setString runs a setter taking one C string.
func (h *Handle) setString(op, v string, f func(*C.struct_nbd_handle, *C.char) C.int) error {
	cs := C.CString(v)
	defer C.free(unsafe.Pointer(cs))
	return h.with(func(p *C.struct_nbd_handle) error {
		_, err := callInt(op, func() C.int { return f(p, cs) })
		return err
	})
}

// setInt runs a setter whose C call is wrapped in f.
func (h *Handle) set(op string, f func(*C.struct_nbd_handle) C.int) error {
	return h.with(func(p *C.struct_nbd_handle) error {
		_, err := callInt(op, func() C.int { return f(p) })
		return err
	})
}

// SetDebug turns libnbd's debug messages (to stderr) on or off (nbd_set_debug).
func (h *Handle) SetDebug(on bool) error {
	return h.set("nbd_set_debug", func(p *C.struct_nbd_handle) C.int { return C.nbd_set_debug(p, C.bool(on)) })
}

// SetExportName sets the export to ask for (nbd_set_export_name); the default is "".
func (h *Handle) SetExportName(name string) error {
	return h.setString("nbd_set_export_name", name, func(p *C.struct_nbd_handle, s *C.char) C.int {
		return C.nbd_set_export_name(p, s)
	})
}

// RequestStructuredReplies chooses whether to negotiate structured replies (default true).
func (h *Handle) RequestStructuredReplies(on bool) error {
	return h.set("nbd_set_request_structured_replies", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_set_request_structured_replies(p, C.bool(on))
	})
}

// AddMetaContext asks for a metadata context during the handshake (nbd_add_meta_context).
func (h *Handle) AddMetaContext(name string) error {
	return h.setString("nbd_add_meta_context", name, func(p *C.struct_nbd_handle, s *C.char) C.int {
		return C.nbd_add_meta_context(p, s)
	})
}

// ClearMetaContexts forgets the contexts added so far (nbd_clear_meta_contexts).
func (h *Handle) ClearMetaContexts() error {
	return h.set("nbd_clear_meta_contexts", func(p *C.struct_nbd_handle) C.int { return C.nbd_clear_meta_contexts(p) })
}

// SetOptMode makes the connect calls stop in the option-negotiation phase, so that the
// caller can issue OptList, OptInfo, OptGo or OptAbort (nbd_set_opt_mode).
func (h *Handle) SetOptMode(on bool) error {
	return h.set("nbd_set_opt_mode", func(p *C.struct_nbd_handle) C.int { return C.nbd_set_opt_mode(p, C.bool(on)) })
}

// SetFullInfo asks the server for the export's canonical name and description during
// NBD_OPT_GO/INFO (nbd_set_full_info).
func (h *Handle) SetFullInfo(on bool) error {
	return h.set("nbd_set_full_info", func(p *C.struct_nbd_handle) C.int { return C.nbd_set_full_info(p, C.bool(on)) })
}

// SetRequestBlockSize chooses whether to ask for block-size constraints (default true).
func (h *Handle) SetRequestBlockSize(on bool) error {
	return h.set("nbd_set_request_block_size", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_set_request_block_size(p, C.bool(on))
	})
}

// SetHandshakeFlags sets the client's handshake flags (HandshakeFixedNewstyle|...).
func (h *Handle) SetHandshakeFlags(flags uint32) error {
	return h.set("nbd_set_handshake_flags", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_set_handshake_flags(p, C.uint32_t(flags))
	})
}

// SetStrictMode sets which requests libnbd checks locally before sending (Strict*).
func (h *Handle) SetStrictMode(flags uint32) error {
	return h.set("nbd_set_strict_mode", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_set_strict_mode(p, C.uint32_t(flags))
	})
}

// SetPreadInitialize chooses whether Pread zeroes the buffer before reading (default true).
func (h *Handle) SetPreadInitialize(on bool) error {
	return h.set("nbd_set_pread_initialize", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_set_pread_initialize(p, C.bool(on))
	})
}

// SetTLS sets the TLS mode (TLSDisable, TLSAllow, TLSRequire).
func (h *Handle) SetTLS(mode int) error {
	return h.set("nbd_set_tls", func(p *C.struct_nbd_handle) C.int { return C.nbd_set_tls(p, C.int(mode)) })
}

// SetTLSCertificates sets the directory holding ca-cert.pem, client-cert.pem, client-key.pem.
func (h *Handle) SetTLSCertificates(dir string) error {
	return h.setString("nbd_set_tls_certificates", dir, func(p *C.struct_nbd_handle, s *C.char) C.int {
		return C.nbd_set_tls_certificates(p, s)
	})
}

// SetTLSVerifyPeer chooses whether the server's certificate is verified (default true).
func (h *Handle) SetTLSVerifyPeer(on bool) error {
	return h.set("nbd_set_tls_verify_peer", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_set_tls_verify_peer(p, C.bool(on))
	})
}

// SetTLSUsername sets the username for TLS-PSK.
func (h *Handle) SetTLSUsername(name string) error {
	return h.setString("nbd_set_tls_username", name, func(p *C.struct_nbd_handle, s *C.char) C.int {
		return C.nbd_set_tls_username(p, s)
	})
}

// SetTLSPSKFile sets the PSK keys file (username:hexkey lines) for TLS-PSK.
func (h *Handle) SetTLSPSKFile(path string) error {
	return h.setString("nbd_set_tls_psk_file", path, func(p *C.struct_nbd_handle, s *C.char) C.int {
		return C.nbd_set_tls_psk_file(p, s)
	})
}

// SetURIAllowLocalFile lets ConnectURI read local files a URI names, such as
// tls-certificates=DIR (libnbd refuses them by default).
func (h *Handle) SetURIAllowLocalFile(on bool) error {
	return h.set("nbd_set_uri_allow_local_file", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_set_uri_allow_local_file(p, C.bool(on))
	})
}
