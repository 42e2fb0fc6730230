// The TLS write path: replies gathered into full records before they are sealed
// (docs/server-performance.md).
package server

import (
	"io"
	"net"
)

const (
	// tlsRecordPlain is the most plaintext one TLS record carries (RFC 8446 section 5.1).
	tlsRecordPlain = 16 << 10
	// tlsStageMax is the largest piece gathered into a record with its neighbours; larger
	// ones are sealed straight from where they lie, which costs no copy.
	tlsStageMax = tlsRecordPlain / 2
)

// writeVec writes bufs, in order, through the TLS session w. crypto/tls seals every Write
// into records of its own, so writing a reply piece by piece costs a record (and a seal, and
// 22 bytes of framing, and a record for the client to open) per reply header. Instead, runs
// of small pieces (headers, offsets, short READ payloads) are gathered into a plaintext
// buffer of up to one record and written together; pieces of tlsStageMax or more are written
// as they are.
func (s *tlsSocket) writeVec(w io.Writer, bufs net.Buffers) error {
	st := s.stage[:0]
	defer func() { s.stage = st[:0] }()
	for _, b := range bufs {
		if len(b) >= tlsStageMax {
			if len(st) > 0 {
				if _, err := w.Write(st); err != nil {
					return err
				}
				st = st[:0]
			}
			if _, err := w.Write(b); err != nil {
				return err
			}
			continue
		}
		if len(st)+len(b) > tlsRecordPlain {
			if _, err := w.Write(st); err != nil {
				return err
			}
			st = st[:0]
		}
		st = append(st, b...)
	}
	if len(st) > 0 {
		if _, err := w.Write(st); err != nil {
			return err
		}
	}
	return nil
}
