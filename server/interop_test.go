// Interop with github.com/pojntfx/go-nbd: its protocol constants must agree with proto.go,
// and its client.List must read our export list.
package server

import (
	"net"
	"testing"

	"github.com/pojntfx/go-nbd/pkg/client"
	"github.com/pojntfx/go-nbd/pkg/protocol"
)

func TestGoNBDConstantsAgree(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ours, its uint64
	}{
		{"NBDMAGIC", MagicNBD, protocol.NEGOTIATION_MAGIC_OLDSTYLE},
		{"IHAVEOPT", MagicIHaveOpt, protocol.NEGOTIATION_MAGIC_OPTION},
		{"option reply magic", MagicOptReply, protocol.NEGOTIATION_MAGIC_REPLY},
		{"FIXED_NEWSTYLE", uint64(FlagFixedNewstyle), uint64(protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE)},
		{"OPT_ABORT", uint64(OptAbort), uint64(protocol.NEGOTIATION_ID_OPTION_ABORT)},
		{"OPT_LIST", uint64(OptList), uint64(protocol.NEGOTIATION_ID_OPTION_LIST)},
		{"OPT_INFO", uint64(OptInfo), uint64(protocol.NEGOTIATION_ID_OPTION_INFO)},
		{"OPT_GO", uint64(OptGo), uint64(protocol.NEGOTIATION_ID_OPTION_GO)},
		{"REP_ACK", uint64(RepAck), uint64(protocol.NEGOTIATION_TYPE_REPLY_ACK)},
		{"REP_SERVER", uint64(RepServer), uint64(protocol.NEGOTIATION_TYPE_REPLY_SERVER)},
		{"REP_INFO", uint64(RepInfo), uint64(protocol.NEGOTIATION_TYPE_REPLY_INFO)},
		{"REP_ERR_UNSUP", uint64(RepErrUnsup), uint64(protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED)},
		{"REP_ERR_UNKNOWN", uint64(RepErrUnknown), uint64(protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN)},
		{"INFO_EXPORT", uint64(InfoExport), uint64(protocol.NEGOTIATION_TYPE_INFO_EXPORT)},
		{"INFO_NAME", uint64(InfoName), uint64(protocol.NEGOTIATION_TYPE_INFO_NAME)},
		{"INFO_DESCRIPTION", uint64(InfoDescription), uint64(protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION)},
		{"INFO_BLOCK_SIZE", uint64(InfoBlockSize), uint64(protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE)},
		{"FLAG_HAS_FLAGS", uint64(FlagHasFlags), uint64(protocol.NEGOTIATION_REPLY_FLAGS_HAS_FLAGS)},
		{"FLAG_CAN_MULTI_CONN", uint64(FlagCanMultiConn), uint64(protocol.NEGOTIATION_REPLY_FLAGS_CAN_MULTI_CONN)},
		{"REQUEST_MAGIC", uint64(MagicRequest), uint64(protocol.TRANSMISSION_MAGIC_REQUEST)},
		{"SIMPLE_REPLY_MAGIC", uint64(MagicSimpleReply), uint64(protocol.TRANSMISSION_MAGIC_REPLY)},
		{"CMD_READ", uint64(CmdRead), uint64(protocol.TRANSMISSION_TYPE_REQUEST_READ)},
		{"CMD_WRITE", uint64(CmdWrite), uint64(protocol.TRANSMISSION_TYPE_REQUEST_WRITE)},
		{"CMD_DISC", uint64(CmdDisc), uint64(protocol.TRANSMISSION_TYPE_REQUEST_DISC)},
		{"EPERM", uint64(EPERM), uint64(protocol.TRANSMISSION_ERROR_EPERM)},
		{"EINVAL", uint64(EINVAL), uint64(protocol.TRANSMISSION_ERROR_EINVAL)},
	} {
		if tc.ours != tc.its {
			t.Errorf("%s: ours %#x, go-nbd %#x", tc.name, tc.ours, tc.its)
		}
	}
}

func TestGoNBDClientList(t *testing.T) {
	// go-nbd reads a single NBD_REP_SERVER and parses its whole payload as names, so give it
	// one export without a description.
	ts := startServer(t, Config{Exports: []*Export{{Name: "disk0", Backend: newMem(4096)}}})
	nc, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	names, err := client.List(nc)
	if err != nil {
		t.Fatalf("go-nbd List: %v", err)
	}
	if len(names) != 1 || names[0] != "disk0" {
		t.Fatalf("go-nbd List: %q", names)
	}
	ts.stillServesExport("disk0")
}

// stillServesExport checks a handshake and read on a named export.
func (ts *testServer) stillServesExport(name string) {
	ts.t.Helper()
	c := ts.connect(clientOpts{export: name})
	c.wantErrno(c.read(0, 512, 0), 0)
	c.disc()
}
