// The hostile-client catalog (docs/hostile-clients.md: items 1-31 and the CVE classes)
// against the built qnbd serving real qcow2 images: the fixture (images written by qemu-io,
// the byte-exact model of what they must read as), the runner that checks after every item
// that a real client still reads the model, the resource checks from /proc, and the end
// checks (SIGTERM exit 0, qemu-img check, qemu-img compare against the model).
package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qnbd/qnbd/e2e/libnbd"
)

const (
	// hostileSize is the virtual size of the main image: larger than MaxPayload so that a
	// maximum-length READ fits.
	hostileSize = 48 << 20
	// hostileCluster is its cluster size.
	hostileCluster = 64 << 10
	// scratchOff starts the range hostile items write to; it starts as a hole.
	scratchOff = 16 << 20
	// rssBoundRace and rssBound are the largest VmRSS accepted from the server built with and
	// without the race detector. A connection may hold DefaultMaxInFlightBytes (64 MiB) of
	// payload. Measured after the whole catalog: 67-71 MiB without the race detector, 269-313
	// MiB with it (its shadow memory and slower frees multiply the footprint about 4.4 times),
	// so each bound leaves the same ~1.4x margin; a length field trusted anywhere would cost
	// gigabytes.
	rssBoundRace = 448 << 20
	rssBound     = 160 << 20
)

// imgWrite is one qemu-io write made before the server starts.
type imgWrite struct {
	cmd  string // "stamp" (position-dependent data), "fill", "compressed" (fill) or "zero"
	seed byte
	off  int64
	n    int64
}

// hostileLayout is what qemu-io writes: partial clusters at both ends, a compressed range, a
// zeroed range inside data, the last clusters, and holes between.
var hostileLayout = []imgWrite{
	{"stamp", 1, 0, 1<<20 + 12345},
	{"fill", 0x5a, 3<<20 - 100, 70000},
	{"compressed", 0x77, 5 << 20, 256 << 10},
	{"stamp", 4, 8<<20 + 777, 2 << 20},
	{"zero", 0, 9 << 20, 128 << 10},
	{"stamp", 6, hostileSize - 200<<10, 200 << 10},
}

// checkWindows are re-read after every item: each layout write's edges and the scratch range.
var checkWindows = [][2]int64{
	{0, 256 << 10}, {1<<20 - 64<<10, 128 << 10}, {3<<20 - 128<<10, 256 << 10},
	{5<<20 - 4096, 264 << 10}, {8 << 20, 192 << 10}, {9<<20 - 64<<10, 256 << 10},
	{10<<20 - 64<<10, 128 << 10}, {scratchOff, 1 << 20}, {hostileSize - 256<<10, 256 << 10},
}

// hostileTarget is one running qnbd, the image it serves, and the model of that image.
type hostileTarget struct {
	name    string
	export  string // the export name the target's model describes
	srv     *server
	network string
	addr    string
	img     string
	model   []byte
	// scratch is where items write: a hole in the image as built.
	scratch int64
	// windows are re-read by stillServes in addition to checkWindows (the ranges items wrote).
	windows [][2]int64
}

// buildHostileImage creates a qcow2 image with 64 KiB clusters in dir, writes hostileLayout
// with qemu-io, and returns its path and the model of its contents.
func buildHostileImage(t *testing.T, dir string, size int64) (string, []byte) {
	t.Helper()
	img := filepath.Join(dir, "hostile.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size="+strconv.Itoa(hostileCluster), img, strconv.FormatInt(size, 10))
	model := make([]byte, size)
	var cmds []string
	for i, w := range hostileLayout {
		if w.off+w.n > size {
			continue
		}
		switch w.cmd {
		case "stamp":
			p := stamp(w.seed, w.off, int(w.n))
			src := filepath.Join(dir, fmt.Sprintf("src%d", i))
			must(t, os.WriteFile(src, p, 0o644))
			cmds = append(cmds, fmt.Sprintf("write -q -s %s %d %d", src, w.off, w.n))
			copy(model[w.off:], p)
		case "fill", "compressed":
			c := ""
			if w.cmd == "compressed" {
				c = "-c "
			}
			cmds = append(cmds, fmt.Sprintf("write -q %s-P %d %d %d", c, w.seed, w.off, w.n))
			for i := range w.n {
				model[w.off+i] = w.seed
			}
		case "zero":
			cmds = append(cmds, fmt.Sprintf("write -q -z %d %d", w.off, w.n))
			clear(model[w.off : w.off+w.n])
		}
	}
	qemuIO(t, "qcow2", img, cmds)
	requireClean(t, img)
	return img, model
}

// put records a write the server acknowledged (or will certainly apply) in the model.
func (h *hostileTarget) put(off int64, p []byte) {
	copy(h.model[off:], p)
	h.windows = append(h.windows, [2]int64{off, int64(len(p))})
}

// zero records acknowledged zeroes in the model.
func (h *hostileTarget) zero(off, n int64) {
	clear(h.model[off : off+n])
	h.windows = append(h.windows, [2]int64{off, n})
}

// watch makes the next stillServes re-read [off, off+n), where a refused or cut write must
// have changed nothing.
func (h *hostileTarget) watch(off, n int64) {
	h.windows = append(h.windows, [2]int64{off, n})
}

// dial opens a raw connection and reads the greeting.
func (h *hostileTarget) dial(t *testing.T) *rawConn {
	t.Helper()
	return dialRaw(t, h.network, h.addr)
}

// session opens a raw connection in transmission on the target's export in the given mode.
func (h *hostileTarget) session(t *testing.T, mode wireMode, metas ...string) *rawConn {
	t.Helper()
	c := h.dial(t)
	c.negotiate(mode, h.export, metas...)
	if c.size != uint64(len(h.model)) {
		t.Fatalf("export size %d, image has %d", c.size, len(h.model))
	}
	return c
}

// wantModel requires the raw connection to read [off, off+n) as the model has it.
func (h *hostileTarget) wantModel(t *testing.T, c *rawConn, off, n int64) {
	t.Helper()
	r := c.read(uint64(off), uint64(n), 0)
	c.wantErrno(r, 0)
	requireBytes(t, h.name+" raw read", off, r.data, h.model[off:off+n])
}

// wantTLSClientRefused requires libnbd, told to require TLS, to fail to connect to the
// target (qnbd serves no TLS) rather than fall back to plaintext.
func (h *hostileTarget) wantTLSClientRefused(t *testing.T) {
	t.Helper()
	lh, err := libnbd.Create()
	if err != nil {
		t.Fatal(err)
	}
	defer lh.Close()
	must(t, lh.SetTLS(libnbd.TLSRequire))
	if err := lh.ConnectURI(h.srv.URI("")); err == nil {
		t.Fatalf("libnbd with TLS required connected in plaintext to a server without TLS")
	}
}

// stillServes is the check after every item: a libnbd client connects and reads every check
// window and every range written since the last check exactly as the model has them,
// nbdinfo reports the size, and (with metrics) the export is left with no connection and no
// request in flight.
func (h *hostileTarget) stillServes(t *testing.T) {
	t.Helper()
	hd, err := libnbd.Create()
	if err != nil {
		t.Fatal(err)
	}
	defer hd.Close()
	if err := hd.ConnectURI(h.srv.URI(h.export)); err != nil {
		t.Fatalf("%s no longer serves: libnbd connect: %v\n%s", h.name, err, h.srv.Output())
	}
	if size, err := hd.GetSize(); err != nil || size != int64(len(h.model)) {
		t.Fatalf("%s: size %d, %v", h.name, size, err)
	}
	for _, w := range append(checkWindows, h.windows...) {
		off, n := w[0], min(w[1], int64(len(h.model))-w[0])
		if n <= 0 {
			continue
		}
		for end := off + n; off < end; {
			p := make([]byte, min(end-off, 4<<20))
			if err := hd.Pread(p, uint64(off), 0); err != nil {
				t.Fatalf("%s: libnbd read [%d,+%d): %v", h.name, off, len(p), err)
			}
			requireBytes(t, h.name+" libnbd read", off, p, h.model[off:off+int64(len(p))])
			off += int64(len(p))
		}
	}
	h.windows = nil
	if err := hd.Shutdown(0); err != nil {
		t.Errorf("%s: libnbd shutdown: %v", h.name, err)
	}
	out := strings.TrimSpace(run(t, "nbdinfo", "--size", h.srv.URI(h.export)))
	if out != strconv.Itoa(len(h.model)) {
		t.Errorf("%s: nbdinfo --size %q, want %d", h.name, out, len(h.model))
	}
	if h.srv.MetricsAddr != "" {
		h.waitQuiet(t)
	}
}

// item runs one catalog item as a subtest on tg and then requires tg (and every other
// target given) to still serve the model, even when the item failed.
func item(t *testing.T, name string, fn func(t *testing.T), tgs ...*hostileTarget) {
	t.Helper()
	t.Run(name, func(t *testing.T) {
		// Registered first, so it runs after the item's own cleanups closed its connections.
		t.Cleanup(func() {
			for _, tg := range tgs {
				tg.stillServes(t)
			}
		})
		fn(t)
	})
}

// procRSS is the server's resident set size in bytes (VmRSS).
func procRSS(t *testing.T, s *server) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmRSS in /proc/%d/status", s.cmd.Process.Pid)
	return 0
}

// requireRSS fails when the server's RSS is over its bound, naming what just happened.
func requireRSS(t *testing.T, s *server, after string) {
	t.Helper()
	rss, bound := procRSS(t, s), int64(rssBound)
	if raceBuilt(s.bin) {
		bound = rssBoundRace
	}
	t.Logf("qnbd VmRSS after %s: %d MiB", after, rss>>20)
	if rss > bound {
		t.Errorf("qnbd VmRSS %d MiB after %s, bound %d MiB", rss>>20, after, bound>>20)
	}
}

// procFDs lists the targets of the server's open file descriptors.
func procFDs(t *testing.T, s *server) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", s.cmd.Process.Pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil {
			out = append(out, l)
		}
	}
	return out
}

// countFDs counts the server's descriptors whose target has the given prefix ("" for all).
func countFDs(t *testing.T, s *server, prefix string) int {
	t.Helper()
	n := 0
	for _, l := range procFDs(t, s) {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// waitFDs waits up to 10 s for the server's descriptor count to come back to at most want.
func waitFDs(t *testing.T, s *server, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		fds := procFDs(t, s)
		if len(fds) <= want {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: qnbd has %d open descriptors, baseline %d (leak):\n%s", what, len(fds), want, strings.Join(fds, "\n"))
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metric reads one sample of the server's /metrics (exposition line "series value").
func metric(t *testing.T, s *server, series string) float64 {
	t.Helper()
	// No keep-alive: a pooled connection would count as one of the server's descriptors.
	cl := http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := cl.Get("http://" + s.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", l, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", series)
	return 0
}

// waitQuiet waits until the target's export has no connection and no request left
// (qnbd_nbd_connections and qnbd_nbd_inflight_requests): the server has finished with every
// client, workers included, not just closed the sockets. Every request the server took off
// the wire must have been reported done, however its client left.
func (h *hostileTarget) waitQuiet(t *testing.T) {
	t.Helper()
	label := h.export
	if label == "" {
		label = "(default)"
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		conns := metric(t, h.srv, `qnbd_nbd_connections{export="`+label+`"}`)
		inflight := metric(t, h.srv, `qnbd_nbd_inflight_requests{export="`+label+`"}`)
		if conns == 0 && inflight == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: export %q still has %v connections and %v requests in flight with no client left",
				h.name, h.export, conns, inflight)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// writeModel writes model to a raw file for qemu-img compare.
func writeModel(t *testing.T, path string, model []byte) {
	t.Helper()
	must(t, os.WriteFile(path, model, 0o644))
}

// copyFile copies src to dst with cp --sparse=always.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "--sparse=always", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp %s %s: %v\n%s", src, dst, err, out)
	}
}

// TestHostileCatalog runs every item of the hostile-client catalog against two qnbd
// processes: A on loopback TCP (-e 0, --handshake-limit 60 (longer than wireTimeout), the
// main image plus a read-only export "ro") and B on
// a Unix socket (-e 2 --handshake-limit 2) for the flood, slowloris and timeout items and
// the Unix variants. After each item a libnbd client and nbdinfo must still read the model;
// at the end both stop with SIGTERM (exit 0) while clients hang on, the descriptor counts are
// back at their baselines, the images check clean and equal the model.
func TestHostileCatalog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	imgA, modelA := buildHostileImage(t, dir, hostileSize)
	dirB, dirRO := filepath.Join(dir, "b"), filepath.Join(dir, "ro")
	must(t, mkdirAll(dirB))
	must(t, mkdirAll(dirRO))
	imgB, modelB := buildHostileImage(t, dirB, 16<<20)
	imgRO, modelRO := buildHostileImage(t, dirRO, 4<<20)
	pristineRO := filepath.Join(dir, "ro-pristine.qcow2")
	copyFile(t, imgRO, pristineRO)

	a := &hostileTarget{name: "A", img: imgA, model: modelA, network: "tcp", scratch: scratchOff}
	a.srv = startQnbd(t, serverConfig{Race: true, TCP: true, Metrics: true, Args: []string{"-e", "0", "--handshake-limit", "60", "-f", "qcow2", "--discard=unmap",
		imgA, "--export", "ro=" + imgRO + ",readonly=on"}})
	a.addr = fmt.Sprintf("127.0.0.1:%d", a.srv.Port)
	b := &hostileTarget{name: "B", img: imgB, model: modelB, network: "unix", scratch: 12 << 20}
	b.srv = startQnbd(t, serverConfig{Race: true, Args: []string{"-e", "2", "--handshake-limit", "2", "-f", "qcow2",
		"--discard=unmap", imgB}})
	b.addr = b.srv.Sock
	ro := &hostileTarget{name: "ro", export: "ro", srv: a.srv, img: imgRO, model: modelRO, network: "tcp", addr: a.addr}

	a.stillServes(t)
	b.stillServes(t)
	baseA, baseB := len(procFDs(t, a.srv)), len(procFDs(t, b.srv))
	imageFDs := countFDs(t, a.srv, dir)
	t.Logf("baseline: A %d descriptors (%d on images), B %d; A VmRSS %d MiB", baseA, imageFDs, baseB, procRSS(t, a.srv)>>20)

	hostileHandshakeItems(t, a, b)
	hostileTransmissionItems(t, a, b, ro)
	hostileCVEs(t, a, b, imageFDs)

	t.Run("no-fd-leak", func(t *testing.T) {
		waitFDs(t, a.srv, baseA, "A after every hostile connection closed")
		waitFDs(t, b.srv, baseB, "B after every hostile connection closed")
	})
	requireRSS(t, a.srv, "the whole catalog")
	stopWithClientsHanging(t, a, b)

	for _, tg := range []*hostileTarget{a, b} {
		requireClean(t, tg.img)
		raw := tg.img + ".expected.raw"
		writeModel(t, raw, tg.model)
		requireSame(t, tg.img, "qcow2", raw, "raw")
	}
	requireClean(t, imgRO)
	requireSame(t, imgRO, "qcow2", pristineRO, "qcow2")
}
