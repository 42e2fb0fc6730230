// Package server is qnbd's NBD protocol frontend: it speaks the fixed-newstyle handshake and
// the transmission phase of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md, including
// structured replies, metadata contexts and the EXTENDED_HEADERS extension) and turns requests
// into calls on a Backend. It knows nothing about image formats and imports no metrics code;
// observers plug in through ServerHooks and ExportHooks.
//
// # Usage
//
//	srv := &server.Server{Config: server.Config{
//		Exports: []*server.Export{{Name: "", Backend: b, MultiConn: true}},
//	}}
//	go srv.Serve(ln)
//	...
//	srv.Shutdown(ctx) // then flush and close the backends
//
// # Wire layout
//
//	handshake   S: "NBDMAGIC" | "IHAVEOPT" | flags u16      C: flags u32
//	option      C: "IHAVEOPT" | option u32 | length u32 | payload
//	opt reply   S: 0x3e889045565a9 | option u32 | type u32 | length u32 | payload
//	request     C: 0x25609513 | flags u16 | type u16 | cookie u64 | offset u64 | length u32 [| data]
//	ext request C: 0x21e41c71 | flags u16 | type u16 | cookie u64 | offset u64 | length u64 [| data]
//	simple      S: 0x67446698 | error u32 | cookie u64 [| data]
//	chunk       S: 0x668e33ef | flags u16 | type u16 | cookie u64 | length u32 | payload
//	ext chunk   S: 0x6e8a278c | flags u16 | type u16 | cookie u64 | offset u64 | length u64 | payload
//
// # TLS
//
// With Config.TLSConfig set the server is FORCEDTLS, as qemu-nbd with --tls-creds: before
// NBD_OPT_STARTTLS every option gets NBD_REP_ERR_TLS_REQD (EXPORT_NAME closes); STARTTLS
// runs the TLS handshake under the handshake deadline, then Config.Authorize, and resets
// every negotiated result; plaintext pipelined after STARTTLS reaches the TLS layer, never
// the option parser. Refusals end with HandshakeTLSRequired, HandshakeTLSFailed or
// HandshakeAuthzDenied, and their errors read as qemu-nbd's reasons (tls.go, tlserrors.go,
// docs/hostile-clients.md). TLSConfig is called per handshake, so the caller can swap
// credentials while connections run.
//
// # Concurrency
//
// Each connection has one goroutine that runs the handshake and then reads requests. It
// validates a request, answers invalid ones itself, reads a WRITE payload into a pooled
// buffer and starts a worker goroutine per request. Workers call the Backend concurrently (a
// Backend must be safe for concurrent use, across connections too) and queue their reply to
// the connection's single writer goroutine, which owns the socket: every reply goes out whole
// in one vectored write, in completion order, not request order.
//
// Memory per connection is bounded: a budget allows at most Config.MaxInFlight requests and
// Config.MaxInFlightBytes of READ/WRITE payload between the reader taking a request and the
// writer finishing its reply. When the budget is spent the reader stops reading, and the
// client's own socket buffer applies the backpressure. Before GO, a connection holds at most
// one option's strings (4 KiB each) besides its 16 KiB read buffer.
//
// Lock order: Server.mu before conn.mu. conn.mu guards the shutdown state and the count of
// requests in flight, and is never held while blocking; budget.mu is a leaf. The writer takes
// no lock: it is told to close through a channel closed once (conn.finish), after which it
// writes what is queued and closes the socket.
//
// # Ordering and durability
//
// NBD_CMD_FLUSH calls Backend.Flush, which makes every write that has returned durable; a
// write is replied to only after it returned, so a FLUSH covers every write already replied
// to, on this connection and on every other connection to the same export (the Backend is
// shared), which is what NBD_FLAG_CAN_MULTI_CONN promises. FUA passes through to the Backend,
// which makes that write durable before returning.
//
// # Errors
//
// A request the spec says to fail gets an NBD errno (errno.go maps backend errors, by
// errors.Is against syscall errnos), chosen, ordered and worded as qemu-nbd 7.2 does
// (transmit.go; docs/qemu-nbd-fidelity.md): EINVAL for every invalid request, read-only and
// out-of-range writes included. A request with a bad magic (compact headers) or a payload
// over the maximum gets EINVAL, then the connection closes without reading further, as in
// qemu-nbd. Other protocol violations (a bad option magic, an oversize option, unknown
// client flags, a bad extended header) close the connection at once. Each failed client is
// reported to Config.ClientErrors in qemu-nbd's words (clienterror.go). A panic while
// serving a connection is logged with its stack and closes only that connection.
//
// # Lifecycle
//
// Server follows net/http: Serve accepts with backoff on temporary errors and tracks
// connections; Shutdown stops accepting, answers options with NBD_REP_ERR_SHUTDOWN and new
// requests with NBD_ESHUTDOWN, lets requests in flight finish, then closes each connection;
// Close drops everything at once. No Backend method is called before a client has finished
// the handshake with GO or EXPORT_NAME, apart from Size, which is read once at startup.
package server
