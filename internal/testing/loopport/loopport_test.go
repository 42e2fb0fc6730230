package loopport

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortsLieBelowTheEphemeralRange checks that the ports handed out are bindable and
// outside the range the kernel picks local ports of outgoing connections from.
func TestFreePortsLieBelowTheEphemeralRange(t *testing.T) {
	lo, hi := Range()
	if hi != ephemeralLow() || lo >= hi {
		t.Fatalf("range [%d, %d), ephemeral ports from %d", lo, hi, ephemeralLow())
	}
	seen := map[int]bool{}
	for range 50 {
		p := Free(t)
		if p < lo || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lo, hi)
		}
		seen[p] = true
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d not bindable: %v", p, err)
		}
		l.Close()
	}
	if len(seen) < 50 {
		t.Errorf("50 calls gave only %d distinct ports", len(seen))
	}
}

// TestFreeSkipsABoundPort checks that a port something listens on is never handed out.
func TestFreeSkipsABoundPort(t *testing.T) {
	p := Free(t)
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Point the walk at the bound port: it must be passed over.
	lo, _ := Range()
	next.Lock()
	next.n, next.started = p-lo, true
	next.Unlock()
	if q := Free(t); q == p {
		t.Fatalf("Free returned port %d, which is bound", p)
	}
}
