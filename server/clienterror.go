// Client failures as qemu-nbd reports them on its standard error: the seam through which a
// program prints qemu-nbd's lines without the server knowing about stderr or program names.
package server

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unicode"
	"unicode/utf8"
)

// ClientError is one client connection's failure, worded as qemu-nbd 7.2 words it
// (docs/qemu-nbd-fidelity.md). Config.ClientErrors receives it; qemu-nbd prints
// "<program>: " + Error() for each.
type ClientError struct {
	// Handshake is set for a failure before transmission, clear for a connection in
	// transmission dropped for an error.
	Handshake bool
	// Msg is qemu-nbd's whole text, such as "option negotiation failed: Bad magic
	// received" or "Disconnect client, due to: Request handling failed in intermediate
	// state".
	Msg string
	// Remote is the client's address.
	Remote string
}

// Error is the line qemu-nbd prints after its program name.
func (e *ClientError) Error() string { return e.Msg }

// Texts of qemu-nbd's failures that are not read errors.
const (
	// msgIntermediate: the connection closes after a reply because the rest of the request
	// (a bad header, a payload too long) was not read.
	msgIntermediate = "Request handling failed in intermediate state"
	// eofData and eofBytes are QEMU's two texts for a short read: reads of a known length
	// (option fields and payloads, WRITE data) and of a request header.
	eofData  = "Unexpected end-of-file before all data were read"
	eofBytes = "Unexpected end-of-file before all bytes were read"
)

// reportClient passes a failure to Config.ClientErrors, if set: msg is the failure's own
// text, "" for none, and prefix what qemu-nbd puts before it.
func (c *conn) reportClient(handshake bool, prefix, msg string) {
	if f := c.srv.Config.ClientErrors; f != nil && msg != "" {
		f(&ClientError{Handshake: handshake, Msg: prefix + msg, Remote: c.remote})
	}
}

// Prefixes of qemu-nbd's messages.
const (
	prefixGreeting    = "write failed: "
	prefixNegotiation = "option negotiation failed: "
	prefixDisconnect  = "Disconnect client, due to: "
)

// ioText words a socket error as QEMU's channel layer does; eof is the text for a short
// read. It is "" for errors of the server's own making (a connection it closed itself).
func ioText(err error, eof string) string {
	var errno syscall.Errno
	var oe *net.OpError
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return eof
	case errors.Is(err, net.ErrClosed):
		return ""
	case errors.Is(err, os.ErrDeadlineExceeded):
		return "handshake time limit expired"
	case errors.As(err, &errno) && errors.As(err, &oe) && oe.Op == "write":
		return "Unable to write to socket: " + strerror(errno)
	case errors.As(err, &errno):
		return "Unable to read from socket: " + strerror(errno)
	}
	return err.Error()
}

// strerror is C's text for errno: Go's, capitalised.
func strerror(errno syscall.Errno) string {
	s := errno.Error()
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

// writeDataError is a WRITE payload cut short.
type writeDataError struct{ err error }

func (e *writeDataError) Error() string { return "nbd: reading WRITE data: " + e.err.Error() }
func (e *writeDataError) Unwrap() error { return e.err }
