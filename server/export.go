// Exports: what a client can select by name, the capabilities found on its Backend, and the
// transmission flags advertised for it.
package server

import (
	"errors"
	"fmt"
	"math/bits"
	"unicode/utf8"
)

// DetectZeroes is qemu's detect-zeroes mode: what the server does with a WRITE whose payload
// is all zero bytes.
type DetectZeroes uint8

// Detect-zeroes modes.
const (
	// DetectZeroesOff writes the zeros as data.
	DetectZeroesOff DetectZeroes = iota
	// DetectZeroesOn turns the write into a write-zeroes that keeps the range allocated.
	DetectZeroesOn
	// DetectZeroesUnmap turns the write into a write-zeroes that may punch a hole (only when
	// the export's Trim is on, as qemu requires discard=unmap for it).
	DetectZeroesUnmap
)

func (d DetectZeroes) String() string {
	switch d {
	case DetectZeroesOff:
		return "off"
	case DetectZeroesOn:
		return "on"
	case DetectZeroesUnmap:
		return "unmap"
	}
	return fmt.Sprintf("DetectZeroes(%d)", uint8(d))
}

// Export is one image served under a name. Fields must not change after the Server starts.
type Export struct {
	// Name is what clients select with NBD_OPT_GO or NBD_OPT_EXPORT_NAME; "" is the default
	// export (qemu-nbd's default without -x).
	Name string
	// Description is sent as NBD_INFO_DESCRIPTION and after the name in NBD_REP_SERVER.
	Description string
	// Backend is the storage; see Backend for the optional interfaces it may implement.
	Backend Backend
	// ReadOnly advertises NBD_FLAG_READ_ONLY and refuses WRITE, TRIM and WRITE_ZEROES with
	// NBD_EPERM.
	ReadOnly bool
	// MultiConn advertises NBD_FLAG_CAN_MULTI_CONN. It is truthful for any Backend shared by
	// all connections: FLUSH calls Backend.Flush, which covers every write that has returned on
	// any connection, and FUA writes are durable before they return.
	MultiConn bool
	// Trim is qemu's discard=unmap: TRIM reaches the Backend (when it is a Trimmer) and
	// WRITE_ZEROES without NO_HOLE may deallocate. Without it TRIM, still advertised on
	// writable exports as qemu-nbd does, succeeds without effect.
	Trim bool
	// DetectZeroes turns all-zero WRITE payloads into write-zeroes (needs a Zeroer).
	DetectZeroes DetectZeroes
	// AllocationDepth offers the qemu:allocation-depth metadata context (qemu-nbd -A).
	AllocationDepth bool
	// Bitmaps offers a qemu:dirty-bitmap:NAME context per name (qemu-nbd -B), with context
	// ids 2, 3... in this order. The Backend must be a DirtyBitmapper.
	Bitmaps []string
	// MinBlockSize is the advertised minimum block size: 0 means 1. Requests not aligned to
	// it are still served, as qemu-nbd serves them: the Backend must accept any alignment.
	MinBlockSize uint32
	// Hooks observes the export's connections and requests; nil means none.
	Hooks ExportHooks
}

// export is an Export with its capabilities resolved once.
type export struct {
	*Export
	size     uint64
	minBlock uint32
	flags    TransmissionFlags // without SEND_DF, which depends on the connection

	trimmer   Trimmer
	zeroer    Zeroer
	cacher    Cacher
	statuser  BlockStatuser
	splitter  ReadSplitter
	depther   DepthStatuser
	bitmapper DirtyBitmapper
}

// newExport validates e and resolves its optional interfaces.
func newExport(e *Export) (*export, error) {
	if e == nil || e.Backend == nil {
		return nil, errors.New("nbd: export without a backend")
	}
	if err := checkString(e.Name); err != nil {
		return nil, fmt.Errorf("nbd: export name %q: %w", truncate(e.Name), err)
	}
	if err := checkString(e.Description); err != nil {
		return nil, fmt.Errorf("nbd: export %q description: %w", truncate(e.Name), err)
	}
	x := &export{Export: e, size: e.Backend.Size(), minBlock: e.MinBlockSize}
	if x.minBlock == 0 {
		x.minBlock = 1
	}
	// "If advertised, this value MUST be a power of 2, MUST NOT be larger than 2^16".
	if bits.OnesCount32(x.minBlock) != 1 || x.minBlock > 1<<16 {
		return nil, fmt.Errorf("nbd: export %q: minimum block size %d is not a power of 2 <= 65536",
			truncate(e.Name), x.minBlock)
	}
	x.trimmer, _ = e.Backend.(Trimmer)
	x.zeroer, _ = e.Backend.(Zeroer)
	x.cacher, _ = e.Backend.(Cacher)
	x.statuser, _ = e.Backend.(BlockStatuser)
	x.depther, _ = e.Backend.(DepthStatuser)
	x.bitmapper, _ = e.Backend.(DirtyBitmapper)
	if len(e.Bitmaps) > 0 && x.bitmapper == nil {
		return nil, fmt.Errorf("nbd: export %q: bitmaps offered, but the backend has none", truncate(e.Name))
	}
	x.splitter, _ = e.Backend.(ReadSplitter)

	// Flags follow qemu-nbd 7.2: FLUSH, FUA and CACHE always; TRIM, WRITE_ZEROES and FAST_ZERO
	// whenever the export is writable. Like qemu-nbd with discard=ignore, TRIM is advertised
	// even when Trim is off or the Backend cannot trim: it then succeeds without effect, which
	// the spec allows ("the server MAY ... not discard").
	f := FlagHasFlags | FlagSendFlush | FlagSendFUA | FlagSendCache
	if e.ReadOnly {
		f |= FlagReadOnly
	} else {
		f |= FlagSendWriteZeroes | FlagSendFastZero | FlagSendTrim
	}
	if e.MultiConn {
		f |= FlagCanMultiConn
	}
	x.flags = f
	return x, nil
}

// checkString enforces the spec's string rules: "MUST NOT contain NUL characters ... MUST be
// no longer than 4096 bytes", UTF-8.
func checkString(s string) error {
	switch {
	case len(s) > MaxStringLen:
		return fmt.Errorf("longer than %d bytes", MaxStringLen)
	case !utf8.ValidString(s):
		return errors.New("not valid UTF-8")
	}
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return errors.New("contains a NUL byte")
		}
	}
	return nil
}

// truncate shortens s for log and error messages.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// exportSet finds exports by name.
type exportSet struct {
	list   []*export
	byName map[string]*export
}

func newExportSet(exports []*Export) (*exportSet, error) {
	s := &exportSet{byName: make(map[string]*export, len(exports))}
	for _, e := range exports {
		x, err := newExport(e)
		if err != nil {
			return nil, err
		}
		if _, dup := s.byName[e.Name]; dup {
			return nil, fmt.Errorf("nbd: two exports named %q", truncate(e.Name))
		}
		s.byName[e.Name] = x
		s.list = append(s.list, x)
	}
	return s, nil
}

func (s *exportSet) find(name string) *export { return s.byName[name] }
