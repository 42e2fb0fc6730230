// Socket tuning for the reply path: a larger send buffer on Unix sockets
// (docs/server-performance.md).
package server

import "net"

// unixSendBuffer is the send buffer asked for on a Unix socket. Linux doubles the figure
// (for its bookkeeping), so the socket holds a whole coalesced batch (maxBatchBytes) and the
// writer does not stall on EAGAIN and the poller in the middle of every large READ reply.
// Much larger buffers saved a little more CPU but cost throughput under load: a Unix socket
// queues data in buffers of up to half its send buffer, and the client cannot read one
// until the server has filled it. The kernel caps the figure at net.core.wmem_max.
const unixSendBuffer = maxBatchBytes / 2

// tuneSocket sizes nc's send buffer. TCP sockets are left alone: setting SO_SNDBUF turns off
// the kernel's send-buffer autotuning, which long fat links need. A failure is harmless and
// ignored: the socket keeps the system default.
func tuneSocket(nc net.Conn) {
	if uc, ok := nc.(*net.UnixConn); ok {
		_ = uc.SetWriteBuffer(unixSendBuffer)
	}
}
