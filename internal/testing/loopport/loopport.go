package loopport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
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
		if !reserve(port) {
			continue // another test process holds it
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("loopport: no free port in [%d, %d)", lo, hi)
}

// lockDir holds one lock file per port handed out, shared by every test process of the
// machine (go test runs packages as separate processes, side by side).
var lockDir = filepath.Join(os.TempDir(), "qnbd-loopport")

// held keeps the lock files of the ports this process reserved open: the locks last until
// the process exits, so no other test process is handed the same port meanwhile.
var held struct {
	sync.Mutex
	files []*os.File
}

// reserve takes port for this process, unless another process has it, or this one already
// does (a flock lock belongs to its open file description, so a second open conflicts with
// the first even in one process): a port is handed out once per process. Without a usable
// lock directory it reserves nothing and says yes: the bind check and the servers' retries
// remain.
//
// Two processes could otherwise be handed the same free port, and the second server's
// readiness probe would then talk to the first one's server (a CI run failed that way: the
// probe saw a greeting, the client that followed was refused).
func reserve(port int) bool {
	if err := os.MkdirAll(lockDir, 0o777); err != nil {
		return true
	}
	os.Chmod(lockDir, 0o777|os.ModeSticky) // shared with other users' test runs; best effort
	f, err := os.OpenFile(filepath.Join(lockDir, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return true
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return false
	}
	held.Lock()
	held.files = append(held.files, f)
	held.Unlock()
	return true
}

// Addr returns "127.0.0.1:PORT" for a port from Free.
func Addr(tb testing.TB) string {
	tb.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Free(tb)))
}
