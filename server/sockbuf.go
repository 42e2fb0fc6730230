// Socket tuning for the reply path: a larger send buffer on Unix sockets
// (docs/server-performance.md).
package server

import "net"

// unixSendBuffer is the send buffer asked for on a Unix socket: two coalesced batches
// (maxBatchBytes), so that a whole batch usually fits in the kernel and the writer does not
// stall on EAGAIN and the poller in the middle of every large READ reply. The kernel caps it
// at net.core.wmem_max.
const unixSendBuffer = 2 * maxBatchBytes

// tuneSocket sizes nc's send buffer. TCP sockets are left alone: setting SO_SNDBUF turns off
// the kernel's send-buffer autotuning, which long fat links need. A failure is harmless and
// ignored: the socket keeps the system default.
func tuneSocket(nc net.Conn) {
	if uc, ok := nc.(*net.UnixConn); ok {
		_ = uc.SetWriteBuffer(unixSendBuffer)
	}
}
