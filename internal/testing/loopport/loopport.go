package loopport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fallbackLow is the ephemeral range's lower bound when /proc does not say (Linux's default).
const fallbackLow = 32768

// span is how many ports below the ephemeral range Free uses.
const span = 12000

var next struct {
	sync.Mutex
	started bool
	n       int
}

// Range returns the half-open range [lo, hi) of ports Free draws from.
func Range() (lo, hi int) {
	hi = ephemeralLow()
	lo = max(1024, hi-span)
	return lo, hi
}

// ephemeralLow reads the lower bound of the kernel's ephemeral port range.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallbackLow
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return fallbackLow
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil || lo <= 1024+1000 {
		return fallbackLow
	}
	return lo
}

// Free returns a port on 127.0.0.1 below the ephemeral range that could be bound a moment
// ago. Successive calls in one process walk the range from a random start, so concurrent
// test processes rarely try the same port.
func Free(tb testing.TB) int {
	tb.Helper()
	p, err := free()
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

func free() (int, error) {
	lo, hi := Range()
	n := hi - lo
	next.Lock()
	if !next.started {
		next.n, next.started = rand.IntN(n), true
	}
	start := next.n
	next.Unlock()
	for i := range n {
		next.Lock()
		next.n = (next.n + 1) % n
		next.Unlock()
		port := lo + (start+i)%n
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("loopport: no free port in [%d, %d)", lo, hi)
}

// Addr returns "127.0.0.1:PORT" for a port from Free.
func Addr(tb testing.TB) string {
	tb.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Free(tb)))
}
