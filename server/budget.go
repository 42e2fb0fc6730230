// Per-connection limits on requests in flight and on the payload bytes they hold, and the
// pool of payload buffers.
package server

import (
	"math/bits"
	"sync"
)

// budget is a counting semaphore on requests plus a weighted one on bytes. Only the
// connection's reader acquires; workers and the writer release. A request's bytes (its WRITE
// payload or READ data) stay acquired until its reply has been written, so a connection never
// holds more than the configured bytes however slowly its client reads.
type budget struct {
	mu        sync.Mutex
	slots     int
	bytes     int64
	maxSlots  int
	maxBytes  int64
	peakSlots int   // for tests: most slots ever in use
	peakBytes int64 // for tests: most bytes ever in use
	wake      chan struct{}
}

func newBudget(slots int, bytes int64) *budget {
	return &budget{slots: slots, bytes: bytes, maxSlots: slots, maxBytes: bytes,
		wake: make(chan struct{}, 1)}
}

// acquire takes one slot and n bytes, waiting until they are free or closed is closed
// (then it returns false). n must not exceed the budget's total bytes.
func (b *budget) acquire(n int64, closed <-chan struct{}) bool {
	for {
		b.mu.Lock()
		if b.slots > 0 && b.bytes >= n {
			b.slots--
			b.bytes -= n
			b.peakSlots = max(b.peakSlots, b.maxSlots-b.slots)
			b.peakBytes = max(b.peakBytes, b.maxBytes-b.bytes)
			b.mu.Unlock()
			return true
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-closed:
			return false
		}
	}
}

// release returns one slot and n bytes.
func (b *budget) release(n int64) {
	b.mu.Lock()
	b.slots++
	b.bytes += n
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// budgetPeak reports the most requests and bytes this connection ever had in flight (zero
// before transmission).
func (c *conn) budgetPeak() (int, int64) {
	c.mu.Lock()
	inTransmission := c.phase == phaseTransmission
	c.mu.Unlock()
	if !inTransmission {
		return 0, 0
	}
	return c.budget.peak()
}

func (b *budget) peak() (int, int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peakSlots, b.peakBytes
}

// Payload buffers come from one sync.Pool per power-of-two size class, 4 KiB to MaxPayload.
const (
	minBufShift = 12
	maxBufShift = 25
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

// getBuf returns a buffer of length n (n <= MaxPayload); its contents are not zeroed.
func getBuf(n int) *[]byte {
	class := bufClass(n)
	if p, ok := bufPools[class].Get().(*[]byte); ok {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n, 1<<(class+minBufShift))
	return &b
}

// putBuf returns a buffer obtained from getBuf.
func putBuf(p *[]byte) {
	if p == nil {
		return
	}
	c := cap(*p)
	class := bufClass(c)
	if c != 1<<(class+minBufShift) {
		return // not one of ours
	}
	*p = (*p)[:0]
	bufPools[class].Put(p)
}

func bufClass(n int) int {
	if n <= 1<<minBufShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minBufShift
}
