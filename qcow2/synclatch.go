// Sync latch: once an fsync of a host file failed, every later one fails too, until reopen.
package qcow2

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// syncLatch wraps a writable host file (the image file, an external data file). Linux may mark
// the dirty pages a failed fdatasync was writing as clean, and report success for the next
// fdatasync although those pages never reached the disk. QEMU's file-posix therefore fails
// every flush after one failed (handle_aiocb_flush, page_cache_inconsistent); so does the
// engine. Without the latch, a later Flush would acknowledge guest writes that may be lost, and
// metadata that must follow a barrier (an L2 entry after its data, after its refcount) would
// be written after a barrier that did not happen: TestFaultSweep's fsync-loses-pages
// states showed both lost flushed data and refcounts of 0 under live L2 entries.
type syncLatch struct {
	Storage
	mu  sync.Mutex
	err error
	// writeEnd is the end of the furthest WriteAt or ZeroRange through the latch: how far the
	// file must reach whatever the allocator does with its length (flush.go trimFile).
	writeEnd atomic.Uint64
}

// WriteAt writes through, noting how far the file was written.
func (s *syncLatch) WriteAt(p []byte, off int64) (int, error) {
	n, err := s.Storage.WriteAt(p, off)
	if n > 0 {
		s.noteEnd(uint64(off) + uint64(n))
	}
	return n, err
}

func (s *syncLatch) noteEnd(end uint64) {
	for {
		cur := s.writeEnd.Load()
		if end <= cur || s.writeEnd.CompareAndSwap(cur, end) {
			return
		}
	}
}

// latchSync wraps s, unless it is wrapped already.
func latchSync(s Storage) Storage {
	if _, ok := s.(*syncLatch); ok {
		return s
	}
	return &syncLatch{Storage: s}
}

// Sync syncs the wrapped file, or fails at once if an earlier Sync failed.
func (s *syncLatch) Sync() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return fmt.Errorf("an earlier sync failed and what it was writing may be lost; reopen the image: %w", s.err)
	}
	if err := s.Storage.Sync(); err != nil {
		s.err = err
		return err
	}
	return nil
}

// PunchHole forwards to the wrapped file (ErrUnsupported if it cannot punch holes).
func (s *syncLatch) PunchHole(off, n int64) error {
	if hp, ok := s.Storage.(HolePuncher); ok {
		return hp.PunchHole(off, n)
	}
	return ErrUnsupported
}

// FindAllocation forwards to the wrapped file (all data if it cannot tell).
func (s *syncLatch) FindAllocation(off int64) (int64, int64, error) {
	if fa, ok := s.Storage.(allocationFinder); ok {
		return fa.FindAllocation(off)
	}
	return 0, 0, ErrUnsupported
}

// AllocatedBytes forwards to the wrapped file.
func (s *syncLatch) AllocatedBytes() (int64, error) {
	if as, ok := s.Storage.(allocatedSizer); ok {
		return as.AllocatedBytes()
	}
	return 0, ErrUnsupported
}

// ZeroRange forwards to the wrapped file (ErrUnsupported if it cannot).
func (s *syncLatch) ZeroRange(off, n int64) error {
	if zr, ok := s.Storage.(zeroRanger); ok {
		err := zr.ZeroRange(off, n)
		if err == nil {
			s.noteEnd(uint64(off + n))
		}
		return err
	}
	return ErrUnsupported
}
