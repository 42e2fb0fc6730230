// What the server told about the export: size, flags, block sizes, negotiated features.
package libnbd

/*
#include <stdlib.h>
#include <libnbd.h>
*/
import "C"

import "unsafe"

// Block-size kinds for GetBlockSize (LIBNBD_SIZE_*).
const (
	SizeMinimum   = int(C.LIBNBD_SIZE_MINIMUM)
	SizePreferred = int(C.LIBNBD_SIZE_PREFERRED)
	SizeMaximum   = int(C.LIBNBD_SIZE_MAXIMUM)
)

// pred runs an nbd_can_* style predicate.
func (h *Handle) pred(op string, f func(*C.struct_nbd_handle) C.int) (bool, error) {
	var v bool
	err := h.with(func(p *C.struct_nbd_handle) error {
		var err error
		v, err = callBool(op, func() C.int { return f(p) })
		return err
	})
	return v, err
}

// GetSize is the export size in bytes (nbd_get_size).
func (h *Handle) GetSize() (int64, error) {
	var v int64
	err := h.with(func(p *C.struct_nbd_handle) error {
		var err error
		v, err = callInt64("nbd_get_size", func() C.int64_t { return C.nbd_get_size(p) })
		return err
	})
	return v, err
}

// GetBlockSize returns the server's minimum, preferred or maximum block size, 0 if the server
// sent none (nbd_get_block_size).
func (h *Handle) GetBlockSize(kind int) (int64, error) {
	var v int64
	err := h.with(func(p *C.struct_nbd_handle) error {
		var err error
		v, err = callInt64("nbd_get_block_size", func() C.int64_t { return C.nbd_get_block_size(p, C.int(kind)) })
		return err
	})
	return v, err
}

// IsReadOnly reports NBD_FLAG_READ_ONLY.
func (h *Handle) IsReadOnly() (bool, error) {
	return h.pred("nbd_is_read_only", func(p *C.struct_nbd_handle) C.int { return C.nbd_is_read_only(p) })
}

// IsRotational reports NBD_FLAG_ROTATIONAL.
func (h *Handle) IsRotational() (bool, error) {
	return h.pred("nbd_is_rotational", func(p *C.struct_nbd_handle) C.int { return C.nbd_is_rotational(p) })
}

// CanFlush reports NBD_FLAG_SEND_FLUSH.
func (h *Handle) CanFlush() (bool, error) {
	return h.pred("nbd_can_flush", func(p *C.struct_nbd_handle) C.int { return C.nbd_can_flush(p) })
}

// CanFua reports NBD_FLAG_SEND_FUA.
func (h *Handle) CanFua() (bool, error) {
	return h.pred("nbd_can_fua", func(p *C.struct_nbd_handle) C.int { return C.nbd_can_fua(p) })
}

// CanTrim reports NBD_FLAG_SEND_TRIM.
func (h *Handle) CanTrim() (bool, error) {
	return h.pred("nbd_can_trim", func(p *C.struct_nbd_handle) C.int { return C.nbd_can_trim(p) })
}

// CanZero reports NBD_FLAG_SEND_WRITE_ZEROES.
func (h *Handle) CanZero() (bool, error) {
	return h.pred("nbd_can_zero", func(p *C.struct_nbd_handle) C.int { return C.nbd_can_zero(p) })
}

// CanFastZero reports NBD_FLAG_SEND_FAST_ZERO.
func (h *Handle) CanFastZero() (bool, error) {
	return h.pred("nbd_can_fast_zero", func(p *C.struct_nbd_handle) C.int { return C.nbd_can_fast_zero(p) })
}

// CanDF reports NBD_FLAG_SEND_DF (needs structured replies).
func (h *Handle) CanDF() (bool, error) {
	return h.pred("nbd_can_df", func(p *C.struct_nbd_handle) C.int { return C.nbd_can_df(p) })
}

// CanMultiConn reports NBD_FLAG_CAN_MULTI_CONN.
func (h *Handle) CanMultiConn() (bool, error) {
	return h.pred("nbd_can_multi_conn", func(p *C.struct_nbd_handle) C.int { return C.nbd_can_multi_conn(p) })
}

// CanCache reports NBD_FLAG_SEND_CACHE.
func (h *Handle) CanCache() (bool, error) {
	return h.pred("nbd_can_cache", func(p *C.struct_nbd_handle) C.int { return C.nbd_can_cache(p) })
}

// CanMetaContext reports whether the server agreed to the named metadata context.
func (h *Handle) CanMetaContext(name string) (bool, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	return h.pred("nbd_can_meta_context", func(p *C.struct_nbd_handle) C.int { return C.nbd_can_meta_context(p, cs) })
}

// GetStructuredRepliesNegotiated reports whether structured replies are in use.
func (h *Handle) GetStructuredRepliesNegotiated() (bool, error) {
	return h.pred("nbd_get_structured_replies_negotiated", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_get_structured_replies_negotiated(p)
	})
}

// GetTLSNegotiated reports whether the connection is encrypted.
func (h *Handle) GetTLSNegotiated() (bool, error) {
	return h.pred("nbd_get_tls_negotiated", func(p *C.struct_nbd_handle) C.int { return C.nbd_get_tls_negotiated(p) })
}

// GetProtocol names the negotiated protocol: "newstyle-fixed", "newstyle" or "oldstyle".
func (h *Handle) GetProtocol() (string, error) {
	var s string
	err := h.with(func(p *C.struct_nbd_handle) error {
		return callPtr("nbd_get_protocol", func() bool {
			cs := C.nbd_get_protocol(p) // static string, not freed
			if cs != nil {
				s = C.GoString(cs)
			}
			return cs != nil
		})
	})
	return s, err
}

// GetCanonicalExportName is the name the server reported for the export (needs SetFullInfo).
func (h *Handle) GetCanonicalExportName() (string, error) {
	var s string
	err := h.with(func(p *C.struct_nbd_handle) error {
		var err error
		s, err = callString("nbd_get_canonical_export_name", func() *C.char { return C.nbd_get_canonical_export_name(p) })
		return err
	})
	return s, err
}

// GetExportDescription is the export's description, if the server sent one (needs SetFullInfo).
func (h *Handle) GetExportDescription() (string, error) {
	var s string
	err := h.with(func(p *C.struct_nbd_handle) error {
		var err error
		s, err = callString("nbd_get_export_description", func() *C.char { return C.nbd_get_export_description(p) })
		return err
	})
	return s, err
}

// ConnectionState describes the handle's state machine position, e.g. "READY" or "DEAD".
func (h *Handle) ConnectionState() string {
	var s string
	_ = h.with(func(p *C.struct_nbd_handle) error {
		if cs := C.nbd_connection_state(p); cs != nil {
			s = C.GoString(cs)
		}
		return nil
	})
	return s
}

// AioIsReady reports whether the connection can take a command now.
func (h *Handle) AioIsReady() (bool, error) {
	return h.pred("nbd_aio_is_ready", func(p *C.struct_nbd_handle) C.int { return C.nbd_aio_is_ready(p) })
}

// AioIsDead reports whether the connection failed (e.g. the server hung up).
func (h *Handle) AioIsDead() (bool, error) {
	return h.pred("nbd_aio_is_dead", func(p *C.struct_nbd_handle) C.int { return C.nbd_aio_is_dead(p) })
}

// AioIsClosed reports whether the connection was shut down cleanly.
func (h *Handle) AioIsClosed() (bool, error) {
	return h.pred("nbd_aio_is_closed", func(p *C.struct_nbd_handle) C.int { return C.nbd_aio_is_closed(p) })
}
