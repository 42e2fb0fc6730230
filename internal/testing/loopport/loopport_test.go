package loopport

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
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

// TestPortsAreReservedAcrossProcesses: a port this process was handed is locked against
// other processes, so that two test packages running side by side never get the same one.
func TestPortsAreReservedAcrossProcesses(t *testing.T) {
	p := Free(t)
	f, err := os.OpenFile(filepath.Join(lockDir, strconv.Itoa(p)), os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("no lock file for port %d: %v", p, err)
	}
	defer f.Close()
	// Another open file description conflicts with this process's lock as another
	// process's would (flock locks belong to the open file description).
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
		t.Fatalf("port %d is not reserved: a second lock was granted", p)
	}
}
