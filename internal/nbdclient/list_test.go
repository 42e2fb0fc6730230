package nbdclient

import (
	"context"
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	nbd "github.com/qnbd/qnbd/server"
)

// mem is a zero-filled Backend of a given size.
type mem uint64

func (m mem) Size() uint64                                        { return uint64(m) }
func (m mem) ReadAt(_ context.Context, p []byte, _ uint64) error  { clear(p); return nil }
func (m mem) WriteAt(context.Context, []byte, uint64, bool) error { return nil }
func (m mem) Flush(context.Context) error                         { return nil }

// TestListReadsEveryExport lists a real server with two exports and checks what comes back.
func TestListReadsEveryExport(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &nbd.Server{Config: nbd.Config{Exports: []*nbd.Export{
		{Name: "a", Description: "first", Backend: mem(1 << 20), AllocationDepth: true},
		{Name: "b", Backend: mem(4096), ReadOnly: true},
	}}}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	xs, err := List(c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) != 2 {
		t.Fatalf("%d exports", len(xs))
	}
	a, b := xs[0], xs[1]
	if a.Name != "a" || a.Description != "first" || !a.HasInfo || a.Size != 1<<20 || a.MinBlock != 1 ||
		a.MaxBlock != nbd.MaxPayload || !slices.Equal(a.Contexts, []string{"base:allocation", "qemu:allocation-depth"}) {
		t.Errorf("export a: %+v", a)
	}
	if b.Name != "b" || b.Size != 4096 || b.Flags&nbd.FlagReadOnly == 0 || !slices.Equal(b.Contexts, []string{"base:allocation"}) {
		t.Errorf("export b: %+v", b)
	}
}

// TestListRefusesOversizeReply checks that a server claiming a huge option reply is an
// error, not an allocation.
func TestListRefusesOversizeReply(t *testing.T) {
	cl, sv := net.Pipe()
	defer cl.Close()
	go func() {
		defer sv.Close()
		g := binary.BigEndian.AppendUint64(nil, nbd.MagicNBD)
		g = binary.BigEndian.AppendUint64(g, nbd.MagicIHaveOpt)
		g = binary.BigEndian.AppendUint16(g, uint16(nbd.FlagFixedNewstyle))
		sv.Write(g)
		var in [4 + 16]byte // client flags, STRUCTURED_REPLY
		if _, err := sv.Read(in[:4]); err != nil {
			return
		}
		sv.Read(in[4:])
		r := binary.BigEndian.AppendUint64(nil, nbd.MagicOptReply)
		r = binary.BigEndian.AppendUint32(r, uint32(nbd.OptStructuredReply))
		r = binary.BigEndian.AppendUint32(r, uint32(nbd.RepAck))
		r = binary.BigEndian.AppendUint32(r, 1<<31)
		sv.Write(r)
	}()
	cl.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := List(cl, Options{}); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("oversize reply: %v", err)
	}
}
