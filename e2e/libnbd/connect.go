// Connecting, option negotiation (opt mode) and disconnecting.
package libnbd

/*
#include <stdlib.h>
#include <libnbd.h>

int qnbd_opt_list(struct nbd_handle *h, uintptr_t user);
int qnbd_opt_list_meta_context(struct nbd_handle *h, uintptr_t user);
*/
import "C"

import (
	"strconv"
	"unsafe"
)

// ShutdownAbandonPending makes Shutdown drop queued commands (LIBNBD_SHUTDOWN_ABANDON_PENDING).
const ShutdownAbandonPending = uint32(C.LIBNBD_SHUTDOWN_ABANDON_PENDING)

// ConnectURI connects to an NBD URI such as nbd://127.0.0.1:10809/export or
// nbd+unix:///export?socket=/path (nbd_connect_uri).
func (h *Handle) ConnectURI(uri string) error {
	return h.setString("nbd_connect_uri", uri, func(p *C.struct_nbd_handle, s *C.char) C.int {
		return C.nbd_connect_uri(p, s)
	})
}

// ConnectUnix connects to a Unix-domain socket (nbd_connect_unix).
func (h *Handle) ConnectUnix(path string) error {
	return h.setString("nbd_connect_unix", path, func(p *C.struct_nbd_handle, s *C.char) C.int {
		return C.nbd_connect_unix(p, s)
	})
}

// ConnectTCP connects to host:port over TCP (nbd_connect_tcp).
func (h *Handle) ConnectTCP(host string, port int) error {
	ch := C.CString(host)
	defer C.free(unsafe.Pointer(ch))
	cp := C.CString(strconv.Itoa(port))
	defer C.free(unsafe.Pointer(cp))
	return h.set("nbd_connect_tcp", func(p *C.struct_nbd_handle) C.int { return C.nbd_connect_tcp(p, ch, cp) })
}

// ConnectCommand runs argv as a child whose stdin/stdout is the NBD connection, e.g. a
// server started with -s/--stdio (nbd_connect_command).
func (h *Handle) ConnectCommand(argv []string) error {
	cargv := cStrings(argv)
	defer freeCStrings(cargv)
	return h.set("nbd_connect_command", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_connect_command(p, &cargv[0])
	})
}

// ConnectSystemdSocketActivation runs argv with a listening socket passed the systemd way
// (LISTEN_FDS=1, LISTEN_PID) and connects to it (nbd_connect_systemd_socket_activation).
func (h *Handle) ConnectSystemdSocketActivation(argv []string) error {
	cargv := cStrings(argv)
	defer freeCStrings(cargv)
	return h.set("nbd_connect_systemd_socket_activation", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_connect_systemd_socket_activation(p, &cargv[0])
	})
}

// OptGo ends option negotiation by selecting the export (NBD_OPT_GO); opt mode only.
func (h *Handle) OptGo() error {
	return h.set("nbd_opt_go", func(p *C.struct_nbd_handle) C.int { return C.nbd_opt_go(p) })
}

// OptAbort ends the negotiation without selecting an export (NBD_OPT_ABORT); opt mode only.
func (h *Handle) OptAbort() error {
	return h.set("nbd_opt_abort", func(p *C.struct_nbd_handle) C.int { return C.nbd_opt_abort(p) })
}

// OptInfo asks for the current export's details without selecting it (NBD_OPT_INFO); after it
// succeeds, GetSize, Can* and friends describe that export. Opt mode only.
func (h *Handle) OptInfo() error {
	return h.set("nbd_opt_info", func(p *C.struct_nbd_handle) C.int { return C.nbd_opt_info(p) })
}

// ExportEntry is one export named by NBD_OPT_LIST.
type ExportEntry struct {
	Name, Description string
}

// OptList lists the server's exports (NBD_OPT_LIST); opt mode only.
func (h *Handle) OptList() ([]ExportEntry, error) {
	var out []ExportEntry
	id := callbacks.add(&listCallback{fn: func(name, desc string) {
		out = append(out, ExportEntry{Name: name, Description: desc})
	}})
	err := h.with(func(p *C.struct_nbd_handle) error {
		_, err := callInt("nbd_opt_list", func() C.int { return C.qnbd_opt_list(p, C.uintptr_t(id)) })
		return err
	})
	return out, err
}

// OptListMetaContext lists the server's metadata contexts matching those added with
// AddMetaContext, or all of them if none were added (NBD_OPT_LIST_META_CONTEXT); opt mode.
func (h *Handle) OptListMetaContext() ([]string, error) {
	var out []string
	id := callbacks.add(&listCallback{fn: func(name, _ string) { out = append(out, name) }})
	err := h.with(func(p *C.struct_nbd_handle) error {
		_, err := callInt("nbd_opt_list_meta_context", func() C.int {
			return C.qnbd_opt_list_meta_context(p, C.uintptr_t(id))
		})
		return err
	})
	return out, err
}

// Shutdown sends NBD_CMD_DISC after the commands in flight and waits for the server to close
// (nbd_shutdown). flags may be ShutdownAbandonPending.
func (h *Handle) Shutdown(flags uint32) error {
	return h.set("nbd_shutdown", func(p *C.struct_nbd_handle) C.int { return C.nbd_shutdown(p, C.uint32_t(flags)) })
}

// AioDisconnect queues NBD_CMD_DISC without waiting (nbd_aio_disconnect).
func (h *Handle) AioDisconnect(flags uint32) error {
	return h.set("nbd_aio_disconnect", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_aio_disconnect(p, C.uint32_t(flags))
	})
}

// KillSubprocess signals the child started by ConnectCommand or socket activation (0 means
// SIGTERM).
func (h *Handle) KillSubprocess(signum int) error {
	return h.set("nbd_kill_subprocess", func(p *C.struct_nbd_handle) C.int {
		return C.nbd_kill_subprocess(p, C.int(signum))
	})
}

// cStrings builds a NULL-terminated C argv; free it with freeCStrings.
func cStrings(args []string) []*C.char {
	out := make([]*C.char, len(args)+1)
	for i, a := range args {
		out[i] = C.CString(a)
	}
	return out
}

func freeCStrings(cs []*C.char) {
	for _, c := range cs {
		if c != nil {
			C.free(unsafe.Pointer(c))
		}
	}
}
