// Store: the in-memory file, its Storage methods, and whole-file helpers.
package memstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// OpKind names a Storage operation.
type OpKind uint8

// Operation kinds, as recorded in the log and passed to injectors.
const (
	OpRead OpKind = iota
	OpWrite
	OpSync
	OpTruncate
	OpPunchHole
	numOpKinds
)

var opNames = [numOpKinds]string{"read", "write", "sync", "truncate", "punch"}

func (k OpKind) String() string {
	if k < numOpKinds {
		return opNames[k]
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// Op is one Storage operation. For OpRead, OpWrite and OpPunchHole, Off and Len are the byte
// range; for OpTruncate, Off is the new size. Data is the written bytes of a logged OpWrite
// (nil when an injector sees the operation, and for other kinds).
type Op struct {
	Kind OpKind
	Off  int64
	Len  int64
	Data []byte
}

func (o Op) String() string {
	switch o.Kind {
	case OpSync:
		return "sync"
	case OpTruncate:
		return fmt.Sprintf("truncate %d", o.Off)
	}
	return fmt.Sprintf("%s %d+%d", o.Kind, o.Off, o.Len)
}

// ErrClosed is returned by operations on a closed Store.
var ErrClosed = errors.New("memstore: store is closed")

// Store is an in-memory file implementing qcow2.Storage and qcow2.HolePuncher. The zero value
// is not usable; call New.
type Store struct {
	mu       sync.Mutex
	cur      *layer // what reads see
	durable  *layer // the contents as of the last Sync
	pending  []Op   // mutations since the last Sync, applied to cur but not durable
	logging  bool
	base     *layer // the contents when StartLog was called
	log      []Op   // every mutation and Sync since StartLog
	inj      Injector
	closed   bool
	counts   [numOpKinds]int
	failures int
}

// New returns an empty store (size 0, nothing pending).
func New() *Store { return fromLayer(newLayer()) }

func fromLayer(l *layer) *Store { return &Store{cur: l, durable: l.clone()} }

// FromBytes returns a store holding a copy of b, all of it durable. All-zero pages are left
// sparse.
func FromBytes(b []byte) *Store {
	l := newLayer()
	for off := 0; off < len(b); off += pageSize {
		chunk := b[off:min(off+pageSize, len(b))]
		if !allZero(chunk) {
			l.writeAt(chunk, int64(off))
		}
	}
	l.size = int64(len(b))
	return fromLayer(l)
}

// FromFile returns a store holding the contents of the file at path, all of it durable. It
// reads only the file's data extents (SEEK_DATA/SEEK_HOLE), so a sparse multi-GiB image loads
// in the time its data takes.
func FromFile(path string) (*Store, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	l := newLayer()
	l.size = fi.Size()
	buf := make([]byte, 1<<20)
	fd := int(f.Fd())
	for off := int64(0); off < l.size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		} else if err != nil {
			data = off // no SEEK_DATA support: read everything
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			hole = l.size
		}
		// Read whole pages so that page-aligned zero runs stay sparse.
		for pos := data &^ (pageSize - 1); pos < hole; {
			n := min(int64(len(buf)), hole-pos)
			if _, err := f.ReadAt(buf[:n], pos); err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			for i := int64(0); i < n; i += pageSize {
				chunk := buf[i:min(i+pageSize, n)]
				if !allZero(chunk) {
					l.writeAt(chunk, pos+i)
				}
			}
			pos += n
		}
		off = hole
	}
	l.size = fi.Size()
	return fromLayer(l), nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// ReadAt reads len(p) bytes at off. Like *os.File, it returns io.EOF with a short count when
// the range runs past the end; never-written ranges read as zeros.
func (s *Store) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(Op{Kind: OpRead, Off: off, Len: int64(len(p))}); err != nil {
		return 0, err
	}
	return s.cur.readAt(p, off)
}

// WriteAt writes p at off, growing the store if needed. The write is volatile until Sync.
func (s *Store) WriteAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(Op{Kind: OpWrite, Off: off, Len: int64(len(p))}); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.mutate(Op{Kind: OpWrite, Off: off, Len: int64(len(p)), Data: append([]byte(nil), p...)})
	return len(p), nil
}

// Sync makes every completed mutation durable.
func (s *Store) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(Op{Kind: OpSync}); err != nil {
		return err
	}
	for _, op := range s.pending {
		s.durable.apply(op)
	}
	s.pending = s.pending[:0]
	if s.logging {
		s.log = append(s.log, Op{Kind: OpSync})
	}
	return nil
}

// Size returns the current length.
func (s *Store) Size() (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.cur.size, nil
}

// Truncate sets the length; the change is volatile until Sync.
func (s *Store) Truncate(size int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(Op{Kind: OpTruncate, Off: size}); err != nil {
		return err
	}
	s.mutate(Op{Kind: OpTruncate, Off: size})
	return nil
}

// PunchHole zeroes [off, off+n) without changing the size (fallocate PUNCH_HOLE|KEEP_SIZE),
// releasing whole pages. It is volatile until Sync.
func (s *Store) PunchHole(off, n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.begin(Op{Kind: OpPunchHole, Off: off, Len: n}); err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	s.mutate(Op{Kind: OpPunchHole, Off: off, Len: n})
	return nil
}

// Close marks the store closed: further operations fail with ErrClosed until Reopen. Closing
// does not sync, as closing a file does not; pending writes stay pending.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// Reopen clears the closed mark and returns s, so that a test can open the same file again.
func (s *Store) Reopen() *Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = false
	return s
}

// begin validates an operation, counts it and consults the injector. Callers hold s.mu.
func (s *Store) begin(op Op) error {
	if s.closed {
		return fmt.Errorf("%s: %w", op, ErrClosed)
	}
	if op.Off < 0 || op.Len < 0 || op.Off > maxOffset || op.Len > maxOffset-op.Off {
		return fmt.Errorf("memstore: %s: %w", op, os.ErrInvalid)
	}
	s.counts[op.Kind]++
	if s.inj != nil {
		if err := s.inj.MaybeError(op); err != nil {
			s.failures++
			return err
		}
	}
	return nil
}

// maxOffset bounds offsets and lengths so that off+len never overflows (the largest file
// size Linux allows is 2^63-1; 2^62 leaves room for arithmetic).
const maxOffset = 1 << 62

// mutate applies a mutation to the current view and records it. Callers hold s.mu.
func (s *Store) mutate(op Op) {
	s.cur.apply(op)
	s.pending = append(s.pending, op)
	if s.logging {
		s.log = append(s.log, op)
	}
}

// Count returns how many operations of kind k were attempted so far, failed ones included;
// a test runs a workload once to learn the counts, then fails each k-th operation in turn.
func (s *Store) Count(k OpKind) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[k]
}

// Failures returns how many operations the injector has failed.
func (s *Store) Failures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failures
}

// Pending returns the number of mutations not yet covered by a Sync.
func (s *Store) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// Allocated returns the bytes of memory holding the current contents (whole pages), to check
// that sparse images stay sparse.
func (s *Store) Allocated() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur.allocated()
}

// Bytes returns a copy of the current contents. It refuses stores larger than limit bytes,
// so a test cannot accidentally materialise a sparse multi-GiB file.
func (s *Store) Bytes(limit int64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur.size > limit {
		return nil, fmt.Errorf("memstore: store is %d bytes, more than the %d-byte limit", s.cur.size, limit)
	}
	b := make([]byte, s.cur.size)
	s.cur.readAt(b, 0)
	return b, nil
}

// WriteFile writes the current contents to a new sparse file at path (holes are not
// written), for example to run qemu-img check on it.
func (s *Store) WriteFile(path string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	for idx, pg := range s.cur.pages {
		off := idx * pageSize
		n := min(int64(pageSize), s.cur.size-off)
		if _, err := f.WriteAt(pg[:n], off); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Truncate(s.cur.size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Clone returns an independent store with the current contents, all durable, no log and no
// injector: the state after a clean shutdown.
func (s *Store) Clone() *Store {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fromLayer(s.cur.clone())
}
