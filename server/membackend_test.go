// An in-memory Backend for tests, with every optional interface, allocation tracking per
// 4 KiB block, fault injection and a gate to hold requests in flight.
package server

import (
	"bytes"
	"context"
	"slices"
	"sync"
	"sync/atomic"
)

const memBlock = 4096

type memBackend struct {
	mu    sync.RWMutex
	data  []byte
	alloc []bool // per memBlock: allocated (holds data)

	flushes   atomic.Int64
	fuaWrites atomic.Int64
	trims     atomic.Int64
	caches    atomic.Int64
	reads     atomic.Int64 // ReadAt calls that returned data
	lastZero  atomic.Value // ZeroFlags of the last WriteZeroes

	failRead   failure
	failWrite  failure
	failZero   failure
	failStatus failure

	// gate, when set, is waited on by every ReadAt and WriteAt (tests hold requests in flight).
	gate atomic.Pointer[chan struct{}]
	// entered is signalled (non-blocking) when a ReadAt/WriteAt starts.
	entered chan struct{}
}

func newMem(size int) *memBackend {
	return &memBackend{data: make([]byte, size), alloc: make([]bool, (size+memBlock-1)/memBlock),
		entered: make(chan struct{}, 1024)}
}

// failure is an injectable error; the zero value injects nothing.
type failure struct{ v atomic.Pointer[error] }

func (f *failure) Store(err error) { f.v.Store(&err) }

func (f *failure) get() error {
	if p := f.v.Load(); p != nil {
		return *p
	}
	return nil
}

// snapshot copies the data under the lock.
func (m *memBackend) snapshot() ([]byte, []bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return bytes.Clone(m.data), slices.Clone(m.alloc)
}

func (m *memBackend) wait() {
	select {
	case m.entered <- struct{}{}:
	default:
	}
	if g := m.gate.Load(); g != nil {
		<-*g
	}
}

func (m *memBackend) Size() uint64 { return uint64(len(m.data)) }

func (m *memBackend) ReadAt(_ context.Context, p []byte, off uint64) error {
	m.wait()
	if err := m.failRead.get(); err != nil {
		return err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	copy(p, m.data[off:])
	m.reads.Add(1)
	return nil
}

func (m *memBackend) WriteAt(_ context.Context, p []byte, off uint64, fua bool) error {
	m.wait()
	if err := m.failWrite.get(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	copy(m.data[off:], p)
	m.markAlloc(off, uint64(len(p)), true)
	if fua {
		m.fuaWrites.Add(1)
	}
	return nil
}

func (m *memBackend) markAlloc(off, n uint64, v bool) {
	if n == 0 {
		return
	}
	for b := off / memBlock; b <= (off+n-1)/memBlock; b++ {
		if v {
			m.alloc[b] = true
		} else if b*memBlock >= off && (b+1)*memBlock <= off+n {
			m.alloc[b] = false // only whole blocks become holes
		}
	}
}

func (m *memBackend) Flush(context.Context) error {
	m.flushes.Add(1)
	return nil
}

func (m *memBackend) Trim(_ context.Context, off, n uint64, _ bool) error {
	m.trims.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.zeroRange(off, n, false)
	return nil
}

func (m *memBackend) zeroRange(off, n uint64, keep bool) {
	clear(m.data[off : off+n])
	if keep {
		m.markAlloc(off, n, true)
	} else {
		m.markAlloc(off, n, false)
	}
}

func (m *memBackend) WriteZeroes(_ context.Context, off, n uint64, f ZeroFlags) error {
	m.lastZero.Store(f)
	if err := m.failZero.get(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.zeroRange(off, n, f.NoHole)
	return nil
}

func (m *memBackend) Cache(context.Context, uint64, uint64) error {
	m.caches.Add(1)
	return nil
}

// Allocation reports holes (unallocated blocks, reading as zero) and data.
func (m *memBackend) Allocation(_ context.Context, off, n uint64) ([]Extent, error) {
	if err := m.failStatus.get(); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []Extent
	end := off + n
	for off < end {
		b := off / memBlock
		l := min((b+1)*memBlock, end) - off
		var f uint32
		if !m.alloc[b] {
			f = StateHole | StateZero
		}
		if k := len(out) - 1; k >= 0 && out[k].Flags == f {
			out[k].Length += l
		} else {
			out = append(out, Extent{Length: l, Flags: f})
		}
		off += l
	}
	return out, nil
}

// AllocationDepth reports depth 1 where allocated and 0 elsewhere.
func (m *memBackend) AllocationDepth(ctx context.Context, off, n uint64) ([]Extent, error) {
	ext, err := m.Allocation(ctx, off, n)
	for i := range ext {
		if ext[i].Flags == 0 {
			ext[i].Flags = 1
		} else {
			ext[i].Flags = 0
		}
	}
	return ext, err
}

func (m *memBackend) hold() chan struct{} {
	ch := make(chan struct{})
	m.gate.Store(&ch)
	return ch
}

func (m *memBackend) unhold(ch chan struct{}) {
	m.gate.Store(nil)
	close(ch)
}

// plainBackend hides every optional interface of its memBackend.
type plainBackend struct{ m *memBackend }

func (p plainBackend) Size() uint64 { return p.m.Size() }
func (p plainBackend) ReadAt(ctx context.Context, b []byte, off uint64) error {
	return p.m.ReadAt(ctx, b, off)
}
func (p plainBackend) WriteAt(ctx context.Context, b []byte, off uint64, fua bool) error {
	return p.m.WriteAt(ctx, b, off, fua)
}
func (p plainBackend) Flush(ctx context.Context) error { return p.m.Flush(ctx) }

// panicBackend panics on reads of offset 0.
type panicBackend struct{ *memBackend }

func (p panicBackend) ReadAt(ctx context.Context, b []byte, off uint64) error {
	if off == 0 {
		panic("test panic in backend")
	}
	return p.memBackend.ReadAt(ctx, b, off)
}
