// Wire constants of the NBD protocol: magics, handshake and transmission flags, options, option
// replies, info types, commands, command flags, reply chunk types and errnos, each quoting
// NBD doc/proto.md (NetworkBlockDevice/nbd, with the EXTENDED_HEADERS extension).
package server

import (
	"fmt"
	"strings"
)

// Magic numbers.
const (
	// MagicNBD: "S: 64 bits, 0x4e42444d41474943 (ASCII 'NBDMAGIC') (also known as the INIT_PASSWD)".
	MagicNBD uint64 = 0x4e42444d41474943
	// MagicIHaveOpt: "S: 64 bits, 0x49484156454F5054 (ASCII 'IHAVEOPT') (note different magic
	// number)"; the client starts every option with it too.
	MagicIHaveOpt uint64 = 0x49484156454F5054
	// MagicOptReply: "S: 64 bits, 0x3e889045565a9 (magic number for replies)".
	MagicOptReply uint64 = 0x3e889045565a9
	// MagicRequest: "C: 32 bits, 0x25609513, magic (NBD_REQUEST_MAGIC)".
	MagicRequest uint32 = 0x25609513
	// MagicExtendedRequest: "C: 32 bits, 0x21e41c71, magic (NBD_EXTENDED_REQUEST_MAGIC)".
	MagicExtendedRequest uint32 = 0x21e41c71
	// MagicSimpleReply: "S: 32 bits, 0x67446698, magic (NBD_SIMPLE_REPLY_MAGIC; used to be
	// NBD_REPLY_MAGIC)".
	MagicSimpleReply uint32 = 0x67446698
	// MagicStructuredReply: "S: 32 bits, 0x668e33ef, magic (NBD_STRUCTURED_REPLY_MAGIC)".
	MagicStructuredReply uint32 = 0x668e33ef
	// MagicExtendedReply: "S: 32 bits, 0x6e8a278c, magic (NBD_EXTENDED_REPLY_MAGIC)".
	MagicExtendedReply uint32 = 0x6e8a278c
)

// Message sizes and limits.
const (
	// MaxStringLen: a string "SHOULD be no longer than 256 bytes and MUST be no longer than
	// 4096 bytes. This applies to export names and error messages (amongst others)."
	MaxStringLen = 4096
	// MaxPayload: "any *length* less than 2^25 (33,554,432) bytes SHOULD NOT be considered a
	// denial of service attack"; the largest READ/WRITE payload this server accepts and
	// advertises in NBD_INFO_BLOCK_SIZE.
	MaxPayload = 1 << 25
	// PreferredBlockSize: "a preferred block size of 2^12 (4,096)".
	PreferredBlockSize = 4096
	// exportNamePadding: "S: 124 bytes, zeroes (reserved) (unless NBD_FLAG_C_NO_ZEROES was
	// negotiated by the client)".
	exportNamePadding = 124
	// compactRequestLen: magic 4, flags 2, type 2, cookie 8, offset 8, length 4.
	compactRequestLen = 28
	// extendedRequestLen: "the client MUST use the 32-byte extended request header".
	extendedRequestLen = 32
	// simpleReplyLen: magic 4, error 4, cookie 8.
	simpleReplyLen = 16
	// structuredChunkLen: magic 4, flags 2, type 2, cookie 8, length 4.
	structuredChunkLen = 20
	// extendedChunkLen: "the server MUST use the 32-byte extended reply header".
	extendedChunkLen = 32
	// optHeaderLen: IHAVEOPT 8, option 4, length 4.
	optHeaderLen = 16
	// optReplyHeaderLen: magic 8, option 4, reply type 4, length 4.
	optReplyHeaderLen = 20
)

// HandshakeFlags is the 16-bit field the server sends after the magics.
type HandshakeFlags uint16

// Handshake flags.
const (
	// FlagFixedNewstyle: "bit 0, NBD_FLAG_FIXED_NEWSTYLE; MUST be set by servers that support
	// the fixed newstyle protocol".
	FlagFixedNewstyle HandshakeFlags = 1 << 0
	// FlagNoZeroes: "bit 1, NBD_FLAG_NO_ZEROES; if set, and if the client replies with
	// NBD_FLAG_C_NO_ZEROES in the client flags field, the server MUST NOT send the 124 bytes of
	// zero when the client ends negotiation with NBD_OPT_EXPORT_NAME."
	FlagNoZeroes HandshakeFlags = 1 << 1
)

// ClientFlags is the 32-bit field the client answers the greeting with.
type ClientFlags uint32

// Client flags.
const (
	// FlagCFixedNewstyle: "bit 0, NBD_FLAG_C_FIXED_NEWSTYLE; SHOULD be set by clients that
	// support the fixed newstyle protocol."
	FlagCFixedNewstyle ClientFlags = 1 << 0
	// FlagCNoZeroes: "bit 1, NBD_FLAG_C_NO_ZEROES; MUST NOT be set if the server did not set
	// NBD_FLAG_NO_ZEROES." "Clients MUST NOT set any other flags; the server MUST drop the TCP
	// connection if the client sets an unknown flag".
	FlagCNoZeroes    ClientFlags = 1 << 1
	knownClientFlags             = FlagCFixedNewstyle | FlagCNoZeroes
)

// TransmissionFlags is the 16-bit per-export field sent after option haggling.
type TransmissionFlags uint16

// Transmission flags.
const (
	// FlagHasFlags: "bit 0, NBD_FLAG_HAS_FLAGS: MUST always be 1."
	FlagHasFlags TransmissionFlags = 1 << 0
	// FlagReadOnly: "bit 1, NBD_FLAG_READ_ONLY ... If this flag is set, the server MUST error
	// subsequent write operations to the export."
	FlagReadOnly TransmissionFlags = 1 << 1
	// FlagSendFlush: "bit 2, NBD_FLAG_SEND_FLUSH: exposes support for NBD_CMD_FLUSH."
	FlagSendFlush TransmissionFlags = 1 << 2
	// FlagSendFUA: "bit 3, NBD_FLAG_SEND_FUA: exposes support for NBD_CMD_FLAG_FUA."
	FlagSendFUA TransmissionFlags = 1 << 3
	// FlagRotational: "bit 4, NBD_FLAG_ROTATIONAL: the server MAY set this flag to 1 to inform
	// the client that the export has the characteristics of a rotational medium".
	FlagRotational TransmissionFlags = 1 << 4
	// FlagSendTrim: "bit 5, NBD_FLAG_SEND_TRIM: exposes support for NBD_CMD_TRIM."
	FlagSendTrim TransmissionFlags = 1 << 5
	// FlagSendWriteZeroes: "bit 6, NBD_FLAG_SEND_WRITE_ZEROES: exposes support for
	// NBD_CMD_WRITE_ZEROES and NBD_CMD_FLAG_NO_HOLE."
	FlagSendWriteZeroes TransmissionFlags = 1 << 6
	// FlagSendDF: "bit 7, NBD_FLAG_SEND_DF: do not fragment a structured reply. ... MUST leave
	// this flag clear if neither structured replies nor extended headers have been negotiated."
	FlagSendDF TransmissionFlags = 1 << 7
	// FlagCanMultiConn: "bit 8, NBD_FLAG_CAN_MULTI_CONN: ... if this flag is present, then the
	// effects of NBD_CMD_FLUSH and NBD_CMD_FLAG_FUA MUST be visible across all connections when
	// the server sends its reply to that command to the client."
	FlagCanMultiConn TransmissionFlags = 1 << 8
	// FlagSendResize: "bit 9, NBD_FLAG_SEND_RESIZE: defined by the experimental RESIZE
	// extension." Never set by this server.
	FlagSendResize TransmissionFlags = 1 << 9
	// FlagSendCache: "bit 10, NBD_FLAG_SEND_CACHE: documents that the server understands
	// NBD_CMD_CACHE".
	FlagSendCache TransmissionFlags = 1 << 10
	// FlagSendFastZero: "bit 11, NBD_FLAG_SEND_FAST_ZERO: ... MUST set this transmission flag to
	// 0 if NBD_FLAG_SEND_WRITE_ZEROES is not set."
	FlagSendFastZero TransmissionFlags = 1 << 11
	// FlagBlockStatusPayload: "bit 12, NBD_FLAG_BLOCK_STATUS_PAYLOAD: Indicates that the server
	// understands the use of the NBD_CMD_FLAG_PAYLOAD_LEN flag to NBD_CMD_BLOCK_STATUS ...
	// Servers MUST NOT advertise this bit unless the client successfully negotiates extended
	// headers".
	FlagBlockStatusPayload TransmissionFlags = 1 << 12
)

var transmissionFlagNames = []string{"has_flags", "read_only", "send_flush", "send_fua",
	"rotational", "send_trim", "send_write_zeroes", "send_df", "can_multi_conn", "send_resize",
	"send_cache", "send_fast_zero", "block_status_payload"}

func (f TransmissionFlags) String() string { return bitNames(uint64(f), transmissionFlagNames) }

// Opt is an option type sent during option haggling.
type Opt uint32

// Options.
const (
	// OptExportName: "NBD_OPT_EXPORT_NAME (1) Choose the export which the client would like to
	// use, end option haggling, and proceed to the transmission phase."
	OptExportName Opt = 1
	// OptAbort: "NBD_OPT_ABORT (2) The client desires to abort the negotiation and terminate
	// the session. The server MUST reply with NBD_REP_ACK."
	OptAbort Opt = 2
	// OptList: "NBD_OPT_LIST (3) Return zero or more NBD_REP_SERVER replies, one for each
	// export, followed by NBD_REP_ACK".
	OptList Opt = 3
	// OptPeekExport: "NBD_OPT_PEEK_EXPORT (4) Was defined by the (withdrawn) experimental
	// PEEK_EXPORT extension; not in use."
	OptPeekExport Opt = 4
	// OptStartTLS: "NBD_OPT_STARTTLS (5) The client wishes to initiate TLS."
	OptStartTLS Opt = 5
	// OptInfo: "NBD_OPT_INFO (6) ... The client wishes to get details about an export with the
	// given name for use in the transmission phase, but does not yet want to move to the
	// transmission phase."
	OptInfo Opt = 6
	// OptGo: "NBD_OPT_GO (7) ... The client wishes to terminate the handshake phase and
	// progress to the transmission phase."
	OptGo Opt = 7
	// OptStructuredReply: "NBD_OPT_STRUCTURED_REPLY (8) The client wishes to use structured
	// replies during the transmission phase."
	OptStructuredReply Opt = 8
	// OptListMetaContext: "NBD_OPT_LIST_META_CONTEXT (9) Return a list of NBD_REP_META_CONTEXT
	// replies, one per context, followed by an NBD_REP_ACK or an error."
	OptListMetaContext Opt = 9
	// OptSetMetaContext: "NBD_OPT_SET_META_CONTEXT (10) Change the set of active metadata
	// contexts."
	OptSetMetaContext Opt = 10
	// OptExtendedHeaders: "NBD_OPT_EXTENDED_HEADERS (11) The client wishes to use extended
	// headers during the transmission phase."
	OptExtendedHeaders Opt = 11
)

var optNames = []string{1: "EXPORT_NAME", 2: "ABORT", 3: "LIST", 4: "PEEK_EXPORT",
	5: "STARTTLS", 6: "INFO", 7: "GO", 8: "STRUCTURED_REPLY", 9: "LIST_META_CONTEXT",
	10: "SET_META_CONTEXT", 11: "EXTENDED_HEADERS"}

func (o Opt) String() string { return enumName("NBD_OPT_", uint64(o), optNames) }

// Rep is an option reply type.
type Rep uint32

// repErr is "bit 31 set" on every error reply type.
const repErr Rep = 1 << 31

// Option reply types.
const (
	// RepAck: "NBD_REP_ACK (1) Will be sent by the server when it accepts the option and no
	// further information is available".
	RepAck Rep = 1
	// RepServer: "NBD_REP_SERVER (2) A description of an export."
	RepServer Rep = 2
	// RepInfo: "NBD_REP_INFO (3) A detailed description about an aspect of an export."
	RepInfo Rep = 3
	// RepMetaContext: "NBD_REP_META_CONTEXT (4) A description of a metadata context."
	RepMetaContext Rep = 4
	// RepErrUnsup: "NBD_REP_ERR_UNSUP (2^31 + 1) The option sent by the client is unknown by
	// this server implementation".
	RepErrUnsup = repErr + 1
	// RepErrPolicy: "NBD_REP_ERR_POLICY (2^31 + 2) The option sent by the client is known by
	// this server and syntactically valid, but server-side policy forbids the server to allow
	// the option".
	RepErrPolicy = repErr + 2
	// RepErrInvalid: "NBD_REP_ERR_INVALID (2^31 + 3) The option sent by the client is known by
	// this server, but was determined by the server to be syntactically or semantically
	// invalid."
	RepErrInvalid = repErr + 3
	// RepErrPlatform: "NBD_REP_ERR_PLATFORM (2^31 + 4) The option sent by the client is not
	// supported on the platform on which the server is running".
	RepErrPlatform = repErr + 4
	// RepErrTLSReqd: "NBD_REP_ERR_TLS_REQD (2^31 + 5) The server is unwilling to continue
	// negotiation unless TLS is initiated first."
	RepErrTLSReqd = repErr + 5
	// RepErrUnknown: "NBD_REP_ERR_UNKNOWN (2^31 + 6) The requested export is not available."
	RepErrUnknown = repErr + 6
	// RepErrShutdown: "NBD_REP_ERR_SHUTDOWN (2^31 + 7) The server is unwilling to continue
	// negotiation as it is in the process of being shut down."
	RepErrShutdown = repErr + 7
	// RepErrBlockSizeReqd: "NBD_REP_ERR_BLOCK_SIZE_REQD (2^31 + 8) The server is unwilling to
	// enter transmission phase for a given export unless the client first acknowledges (via
	// NBD_INFO_BLOCK_SIZE) that it will obey non-default block sizing requirements."
	RepErrBlockSizeReqd = repErr + 8
	// RepErrTooBig: "NBD_REP_ERR_TOO_BIG (2^31 + 9) The request or the reply is too large to
	// process."
	RepErrTooBig = repErr + 9
	// RepErrExtHeaderReqd: "NBD_REP_ERR_EXT_HEADER_REQD (2^31 + 10) ... also used to indicate
	// that the server is unable to downgrade to structured replies (via
	// NBD_OPT_STRUCTURED_REPLY) if extended headers have already been enabled."
	RepErrExtHeaderReqd = repErr + 10
)

var repNames = []string{1: "ACK", 2: "SERVER", 3: "INFO", 4: "META_CONTEXT"}
var repErrNames = []string{1: "ERR_UNSUP", 2: "ERR_POLICY", 3: "ERR_INVALID", 4: "ERR_PLATFORM",
	5: "ERR_TLS_REQD", 6: "ERR_UNKNOWN", 7: "ERR_SHUTDOWN", 8: "ERR_BLOCK_SIZE_REQD",
	9: "ERR_TOO_BIG", 10: "ERR_EXT_HEADER_REQD"}

// IsError reports whether r is an error reply ("all of which are denoted by having bit 31
// set").
func (r Rep) IsError() bool { return r&repErr != 0 }

func (r Rep) String() string {
	if r.IsError() {
		return enumName("NBD_REP_", uint64(r&^repErr), repErrNames)
	}
	return enumName("NBD_REP_", uint64(r), repNames)
}

// Info is an information type in NBD_REP_INFO replies and NBD_OPT_INFO/GO requests.
type Info uint16

// Information types.
const (
	// InfoExport: "NBD_INFO_EXPORT (0) Mandatory information before a successful completion
	// of NBD_OPT_INFO or NBD_OPT_GO. ... length MUST be 12".
	InfoExport Info = 0
	// InfoName: "NBD_INFO_NAME (1) Represents the server's canonical name of the export."
	InfoName Info = 1
	// InfoDescription: "NBD_INFO_DESCRIPTION (2) A description of the export, suitable for
	// direct display to the human being."
	InfoDescription Info = 2
	// InfoBlockSize: "NBD_INFO_BLOCK_SIZE (3) Represents the server's advertised block size
	// constraints ... The length MUST be 14".
	InfoBlockSize Info = 3
)

var infoNames = []string{"EXPORT", "NAME", "DESCRIPTION", "BLOCK_SIZE"}

func (i Info) String() string { return enumName("NBD_INFO_", uint64(i), infoNames) }

// Cmd is a request type in the transmission phase.
type Cmd uint16

// Commands.
const (
	// CmdRead: "NBD_CMD_READ (0) A read request. Length and offset define the data to be
	// read."
	CmdRead Cmd = 0
	// CmdWrite: "NBD_CMD_WRITE (1) A write request. ... The client MUST follow the request
	// header with *length* number of bytes to be written to the device."
	CmdWrite Cmd = 1
	// CmdDisc: "NBD_CMD_DISC (2) A disconnect request. The server MUST handle all outstanding
	// requests, shut down the TLS session (if one is running), and close the TCP session."
	CmdDisc Cmd = 2
	// CmdFlush: "NBD_CMD_FLUSH (3) A flush request. The server MUST NOT send a successful reply
	// header for this request before all write requests for which a reply has already been
	// sent to the client have reached permanent storage".
	CmdFlush Cmd = 3
	// CmdTrim: "NBD_CMD_TRIM (4) A hint to the server that the data defined by length and
	// offset is no longer needed."
	CmdTrim Cmd = 4
	// CmdCache: "NBD_CMD_CACHE (5) A cache request. The client is informing the server that it
	// plans to access the area specified by *offset* and *length*."
	CmdCache Cmd = 5
	// CmdWriteZeroes: "NBD_CMD_WRITE_ZEROES (6) A write request with no payload."
	CmdWriteZeroes Cmd = 6
	// CmdBlockStatus: "NBD_CMD_BLOCK_STATUS (7) A block status query request."
	CmdBlockStatus Cmd = 7
	// CmdResize: "NBD_CMD_RESIZE (8) Defined by the experimental RESIZE extension." Not
	// implemented: answered NBD_EINVAL like any unknown command.
	CmdResize Cmd = 8
)

var cmdNames = []string{"READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE", "WRITE_ZEROES",
	"BLOCK_STATUS", "RESIZE"}

func (c Cmd) String() string { return enumName("NBD_CMD_", uint64(c), cmdNames) }

// CmdFlags is the 16-bit command flags field of a request.
type CmdFlags uint16

// Command flags.
const (
	// CmdFlagFUA: "bit 0, NBD_CMD_FLAG_FUA; This flag is valid for all commands, provided
	// NBD_FLAG_SEND_FUA has been negotiated, in which case the server MUST accept all commands
	// with this bit set (even by ignoring the bit)."
	CmdFlagFUA CmdFlags = 1 << 0
	// CmdFlagNoHole: "bit 1, NBD_CMD_FLAG_NO_HOLE; valid during NBD_CMD_WRITE_ZEROES."
	CmdFlagNoHole CmdFlags = 1 << 1
	// CmdFlagDF: "bit 2, NBD_CMD_FLAG_DF; the "don't fragment" flag, valid during
	// NBD_CMD_READ."
	CmdFlagDF CmdFlags = 1 << 2
	// CmdFlagReqOne: "bit 3, NBD_CMD_FLAG_REQ_ONE; valid during NBD_CMD_BLOCK_STATUS. If set,
	// the client is interested in only one extent per metadata context."
	CmdFlagReqOne CmdFlags = 1 << 3
	// CmdFlagFastZero: "bit 4, NBD_CMD_FLAG_FAST_ZERO; valid during NBD_CMD_WRITE_ZEROES. If
	// set, but the server cannot perform the write zeroes any faster than it would for an
	// equivalent NBD_CMD_WRITE, then the server MUST fail quickly with an error of
	// NBD_ENOTSUP."
	CmdFlagFastZero CmdFlags = 1 << 4
	// CmdFlagPayloadLen: "bit 5, NBD_CMD_FLAG_PAYLOAD_LEN; only valid if extended headers were
	// negotiated ... If set, the *length* field of the header describes a (nonzero) payload
	// length of data to be sent alongside the header".
	CmdFlagPayloadLen CmdFlags = 1 << 5
)

var cmdFlagNames = []string{"fua", "no_hole", "df", "req_one", "fast_zero", "payload_len"}

func (f CmdFlags) String() string { return bitNames(uint64(f), cmdFlagNames) }

// ReplyFlags is the 16-bit flags field of a structured or extended reply chunk.
type ReplyFlags uint16

// ReplyFlagDone: "bit 0, NBD_REPLY_FLAG_DONE; the server MUST clear this bit if more structured
// reply chunks will be sent for the same client request, and MUST set this bit if this is the
// final reply."
const ReplyFlagDone ReplyFlags = 1 << 0

// ReplyType is the type of a structured or extended reply chunk.
type ReplyType uint16

// replyTypeErr is "bit 15 set" on every error chunk type.
const replyTypeErr ReplyType = 1 << 15

// Reply chunk types.
const (
	// ReplyTypeNone: "NBD_REPLY_TYPE_NONE (0) *length* MUST be 0 ... This chunk type MUST
	// always be used with the NBD_REPLY_FLAG_DONE bit set".
	ReplyTypeNone ReplyType = 0
	// ReplyTypeOffsetData: "NBD_REPLY_TYPE_OFFSET_DATA (1) ... *length* MUST be at least 9. It
	// represents the contents of *length - 8* bytes of the file, starting at the absolute
	// *offset*".
	ReplyTypeOffsetData ReplyType = 1
	// ReplyTypeOffsetHole: "NBD_REPLY_TYPE_OFFSET_HOLE (2) ... *length* MUST be exactly 12. It
	// represents that the contents of *hole size* bytes, starting at the absolute *offset* from
	// the start of the export, read as all zeroes."
	ReplyTypeOffsetHole ReplyType = 2
	// ReplyTypeBlockStatus: "NBD_REPLY_TYPE_BLOCK_STATUS (5) *length* MUST be 4 + (a positive
	// integer multiple of 8)."
	ReplyTypeBlockStatus ReplyType = 5
	// ReplyTypeBlockStatusExt: "NBD_REPLY_TYPE_BLOCK_STATUS_EXT (6) ... *length* MUST be 8 + (a
	// positive multiple of 16). ... This chunk type MUST NOT be used unless extended headers
	// were negotiated".
	ReplyTypeBlockStatusExt ReplyType = 6
	// ReplyTypeError: "NBD_REPLY_TYPE_ERROR (2^15 + 1) ... *length* MUST be at least 6. This
	// chunk represents that an error occurred, and the client MAY NOT make any assumptions
	// about partial success."
	ReplyTypeError = replyTypeErr + 1
	// ReplyTypeErrorOffset: "NBD_REPLY_TYPE_ERROR_OFFSET (2^15 + 2) ... *length* MUST be at
	// least 14. This reply represents that an error occurred at a given offset".
	ReplyTypeErrorOffset = replyTypeErr + 2
)

var replyTypeNames = []string{0: "NONE", 1: "OFFSET_DATA", 2: "OFFSET_HOLE", 5: "BLOCK_STATUS",
	6: "BLOCK_STATUS_EXT"}
var replyTypeErrNames = []string{1: "ERROR", 2: "ERROR_OFFSET"}

// IsError reports whether t is an error chunk type ("All error chunk types have bit 15 set").
func (t ReplyType) IsError() bool { return t&replyTypeErr != 0 }

func (t ReplyType) String() string {
	if t.IsError() {
		return enumName("NBD_REPLY_TYPE_", uint64(t&^replyTypeErr), replyTypeErrNames)
	}
	return enumName("NBD_REPLY_TYPE_", uint64(t), replyTypeNames)
}

// Errno is an NBD error value ("the allowed values for the error field have been restricted to
// set of possibilities").
type Errno uint32

// Error values.
const (
	// EPERM: "NBD_EPERM (1), Operation not permitted."
	EPERM Errno = 1
	// EIO: "NBD_EIO (5), Input/output error."
	EIO Errno = 5
	// ENOMEM: "NBD_ENOMEM (12), Cannot allocate memory."
	ENOMEM Errno = 12
	// EINVAL: "NBD_EINVAL (22), Invalid argument."
	EINVAL Errno = 22
	// ENOSPC: "NBD_ENOSPC (28), No space left on device."
	ENOSPC Errno = 28
	// EOVERFLOW: "NBD_EOVERFLOW (75), Value too large."
	EOVERFLOW Errno = 75
	// ENOTSUP: "NBD_ENOTSUP (95), Operation not supported."
	ENOTSUP Errno = 95
	// ESHUTDOWN: "NBD_ESHUTDOWN (108), Server is in the process of being shut down."
	ESHUTDOWN Errno = 108
)

func (e Errno) String() string {
	switch e {
	case 0:
		return "OK"
	case EPERM:
		return "NBD_EPERM"
	case EIO:
		return "NBD_EIO"
	case ENOMEM:
		return "NBD_ENOMEM"
	case EINVAL:
		return "NBD_EINVAL"
	case ENOSPC:
		return "NBD_ENOSPC"
	case EOVERFLOW:
		return "NBD_EOVERFLOW"
	case ENOTSUP:
		return "NBD_ENOTSUP"
	case ESHUTDOWN:
		return "NBD_ESHUTDOWN"
	}
	return fmt.Sprintf("NBD_E(%d)", uint32(e))
}

// Metadata context names this server offers.
const (
	// MetaBaseAllocation: "This standard defines exactly one metadata context; it is called
	// base:allocation".
	MetaBaseAllocation = "base:allocation"
	// MetaQemuAllocationDepth is QEMU's "qemu:allocation-depth" context (qemu
	// docs/interop/nbd.txt): the depth in the backing chain at which a range is allocated.
	MetaQemuAllocationDepth = "qemu:allocation-depth"
)

// enumName formats v with the name from names, or a numeric fallback.
func enumName(prefix string, v uint64, names []string) string {
	if v < uint64(len(names)) && names[v] != "" {
		return prefix + names[v]
	}
	return fmt.Sprintf("%s(%d)", strings.TrimSuffix(prefix, "_"), v)
}

// bitNames lists the set bits of v by name, "0" when none, "0x..." for unnamed bits.
func bitNames(v uint64, names []string) string {
	if v == 0 {
		return "0"
	}
	var parts []string
	for i := 0; i < 64; i++ {
		if v&(1<<i) == 0 {
			continue
		}
		if i < len(names) {
			parts = append(parts, names[i])
		} else {
			parts = append(parts, fmt.Sprintf("%#x", uint64(1)<<i))
		}
	}
	return strings.Join(parts, "|")
}
