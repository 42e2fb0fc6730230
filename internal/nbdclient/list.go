// NBD_OPT_LIST and the per-export queries of qemu-nbd -L.
package nbdclient

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	nbd "github.com/qnbd/qnbd/server"
)

var be = binary.BigEndian

// maxReplyLen bounds one option reply's payload: a name and a description of at most
// nbd.MaxStringLen each, plus their headers.
const maxReplyLen = 4 + 2*nbd.MaxStringLen + 16

// maxContexts bounds the metadata contexts kept per export.
const maxContexts = 4096

// Export is what the handshake tells about one export.
type Export struct {
	Name, Description string
	// HasInfo is set when NBD_OPT_INFO answered: Size and Flags are then valid.
	HasInfo bool
	Size    uint64
	Flags   nbd.TransmissionFlags
	// MinBlock, OptBlock and MaxBlock are the NBD_INFO_BLOCK_SIZE constraints; MinBlock is 0
	// when the server sent none.
	MinBlock, OptBlock, MaxBlock uint32
	// Contexts are the metadata contexts the server lists for the export.
	Contexts []string
}

// client is one handshake in progress.
type client struct {
	nc net.Conn
	br *bufio.Reader
}

// optReply is one option reply.
type optReply struct {
	rep  nbd.Rep
	data []byte
}

// Options modify List.
type Options struct {
	// TLS, when set, starts TLS with NBD_OPT_STARTTLS before anything else, as qemu-nbd -L
	// does with --tls-creds.
	TLS *tls.Config
}

// List lists the exports of the server at the other end of conn.
func List(conn net.Conn, o Options) ([]Export, error) {
	c := &client{nc: conn, br: bufio.NewReader(conn)}
	structured, err := c.start(o.TLS)
	if err != nil {
		return nil, err
	}
	exports, err := c.list()
	if err != nil {
		return nil, err
	}
	for i := range exports {
		ok, err := c.info(&exports[i])
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if structured {
			if err := c.contexts(&exports[i]); err != nil {
				return nil, err
			}
		}
	}
	// A courtesy before hanging up; the reply does not matter.
	c.send(nbd.OptAbort, nil)
	return exports, nil
}

// start reads the greeting, answers it, starts TLS when tc is set and asks for structured
// replies.
func (c *client) start(tc *tls.Config) (structured bool, err error) {
	var g [18]byte
	if _, err := io.ReadFull(c.br, g[:]); err != nil {
		return false, errorf("Failed to read initial magic: %v", eofError(err))
	}
	if be.Uint64(g[:8]) != nbd.MagicNBD {
		return false, errorf("Invalid magic received")
	}
	if be.Uint64(g[8:16]) != nbd.MagicIHaveOpt {
		return false, errorf("Server does not support export lists")
	}
	hf := nbd.HandshakeFlags(be.Uint16(g[16:]))
	if hf&nbd.FlagFixedNewstyle == 0 {
		return false, errorf("Server does not support export lists")
	}
	cf := nbd.FlagCFixedNewstyle
	if hf&nbd.FlagNoZeroes != 0 {
		cf |= nbd.FlagCNoZeroes
	}
	if err := c.write(be.AppendUint32(nil, uint32(cf))); err != nil {
		return false, err
	}
	if tc != nil {
		if err := c.startTLS(tc); err != nil {
			return false, err
		}
	}
	if err := c.send(nbd.OptStructuredReply, nil); err != nil {
		return false, err
	}
	r, err := c.reply(nbd.OptStructuredReply)
	if err != nil {
		return false, err
	}
	return r.rep == nbd.RepAck, nil
}

// list runs NBD_OPT_LIST.
func (c *client) list() ([]Export, error) {
	if err := c.send(nbd.OptList, nil); err != nil {
		return nil, err
	}
	var out []Export
	for {
		r, err := c.reply(nbd.OptList)
		if err != nil {
			return nil, err
		}
		switch {
		case r.rep == nbd.RepAck:
			return out, nil
		case r.rep.IsError():
			return nil, errorf("Server rejected request to list exports: %s", r.data)
		case r.rep != nbd.RepServer:
			return nil, errorf("Unexpected reply type %d for NBD_OPT_LIST", uint32(r.rep))
		}
		if len(r.data) < 4 || uint64(be.Uint32(r.data)) > uint64(len(r.data)-4) {
			return nil, errorf("Bad length in NBD_REP_SERVER reply")
		}
		n := be.Uint32(r.data)
		out = append(out, Export{Name: string(r.data[4 : 4+n]), Description: string(r.data[4+n:])})
	}
}

// info runs NBD_OPT_INFO for x; ok is false when the server refused it.
func (c *client) info(x *Export) (ok bool, err error) {
	p := be.AppendUint32(nil, uint32(len(x.Name)))
	p = append(p, x.Name...)
	p = be.AppendUint16(p, 1)
	p = be.AppendUint16(p, uint16(nbd.InfoBlockSize))
	if err := c.send(nbd.OptInfo, p); err != nil {
		return false, err
	}
	for {
		r, err := c.reply(nbd.OptInfo)
		if err != nil {
			return false, err
		}
		switch {
		case r.rep == nbd.RepAck:
			if !x.HasInfo {
				return false, errorf("broken server: NBD_REP_ACK without NBD_INFO_EXPORT")
			}
			return true, nil
		case r.rep.IsError():
			return false, nil
		case r.rep != nbd.RepInfo || len(r.data) < 2:
			return false, errorf("unexpected reply type %d to NBD_OPT_INFO", uint32(r.rep))
		}
		d := r.data[2:]
		switch nbd.Info(be.Uint16(r.data)) {
		case nbd.InfoExport:
			if len(d) != 10 {
				return false, errorf("remaining export info len %d is unexpected size", len(d))
			}
			x.HasInfo, x.Size, x.Flags = true, be.Uint64(d), nbd.TransmissionFlags(be.Uint16(d[8:]))
		case nbd.InfoBlockSize:
			if len(d) != 12 {
				return false, errorf("remaining export info len %d is unexpected size", len(d))
			}
			x.MinBlock, x.OptBlock, x.MaxBlock = be.Uint32(d), be.Uint32(d[4:]), be.Uint32(d[8:])
		}
	}
}

// contexts lists x's metadata contexts: every one, then the qemu: ones when the first
// answer had none of them.
func (c *client) contexts(x *Export) error {
	seenQemu := false
	for _, query := range []string{"", "qemu:"} {
		if query != "" && (len(x.Contexts) == 0 || seenQemu) {
			return nil
		}
		p := be.AppendUint32(nil, uint32(len(x.Name)))
		p = append(p, x.Name...)
		if query == "" {
			p = be.AppendUint32(p, 0)
		} else {
			p = be.AppendUint32(p, 1)
			p = be.AppendUint32(p, uint32(len(query)))
			p = append(p, query...)
		}
		if err := c.send(nbd.OptListMetaContext, p); err != nil {
			return err
		}
		for done := false; !done; {
			r, err := c.reply(nbd.OptListMetaContext)
			if err != nil {
				return err
			}
			switch {
			case r.rep == nbd.RepAck, r.rep.IsError():
				done = true
			case r.rep != nbd.RepMetaContext || len(r.data) < 4:
				return errorf("unexpected reply type %d to NBD_OPT_LIST_META_CONTEXT", uint32(r.rep))
			case len(x.Contexts) < maxContexts:
				name := string(r.data[4:])
				seenQemu = seenQemu || len(name) >= 5 && name[:5] == "qemu:"
				x.Contexts = append(x.Contexts, name)
			}
		}
	}
	return nil
}

// startTLS sends NBD_OPT_STARTTLS and, once the server agrees, runs the TLS handshake; the
// rest of the handshake goes over TLS.
func (c *client) startTLS(tc *tls.Config) error {
	if err := c.send(nbd.OptStartTLS, nil); err != nil {
		return err
	}
	r, err := c.reply(nbd.OptStartTLS)
	if err != nil {
		return err
	}
	if r.rep != nbd.RepAck {
		return errorf("Server rejected request to start TLS %x", uint32(r.rep))
	}
	if c.br.Buffered() > 0 {
		return errorf("Server sent data before the TLS handshake")
	}
	tc2 := tls.Client(c.nc, tc)
	if err := tc2.Handshake(); err != nil {
		return errorf("TLS handshake failed: %v", err)
	}
	c.nc, c.br = tc2, bufio.NewReader(tc2)
	return nil
}

// send writes one option with its payload.
func (c *client) send(opt nbd.Opt, payload []byte) error {
	b := be.AppendUint64(nil, nbd.MagicIHaveOpt)
	b = be.AppendUint32(b, uint32(opt))
	b = be.AppendUint32(b, uint32(len(payload)))
	return c.write(append(b, payload...))
}

func (c *client) write(b []byte) error {
	if _, err := c.nc.Write(b); err != nil {
		return errorf("Failed to send option request: %v", err)
	}
	return nil
}

// reply reads one option reply to opt.
func (c *client) reply(opt nbd.Opt) (optReply, error) {
	var h [20]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return optReply{}, errorf("failed to read option reply: %v", eofError(err))
	}
	if be.Uint64(h[:8]) != nbd.MagicOptReply {
		return optReply{}, errorf("Unexpected option reply magic")
	}
	if got := nbd.Opt(be.Uint32(h[8:])); got != opt {
		return optReply{}, errorf("Unexpected option type %d, expected %d", uint32(got), uint32(opt))
	}
	n := be.Uint32(h[16:])
	if n > maxReplyLen {
		return optReply{}, errorf("server's option reply of %d bytes is too long", n)
	}
	r := optReply{rep: nbd.Rep(be.Uint32(h[12:])), data: make([]byte, n)}
	if _, err := io.ReadFull(c.br, r.data); err != nil {
		return optReply{}, errorf("failed to read option reply: %v", eofError(err))
	}
	return r, nil
}

// eofError words a short read as QEMU does.
func eofError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return errorf("Unexpected end-of-file before all data were read")
	}
	return err
}

// qemuError is an error worded as QEMU's NBD client words it, capital letter included.
type qemuError string

func (e qemuError) Error() string { return string(e) }

func errorf(format string, args ...any) error { return qemuError(fmt.Sprintf(format, args...)) }
