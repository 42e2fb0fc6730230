// End-to-end tests of qnbd serving qcow2 images: the real binary (built with -race when the
// tests run with -race) on a Unix socket, driven by qemu-io, qemu-img, nbdinfo and nbdcopy,
// judged by qemu-img check and compare; -s, -l, -f raw, --cache modes, refused images, the
// dirty-image repair and --metrics-addr.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/internal/testing/loopport"
)

const testVersion = "9.9.9-qcow2-test"

func TestQcow2Binary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "qnbd")
	args := []string{"build", "-o", bin, "-ldflags", "-X main.version=" + testVersion}
	if raceEnabled {
		args = append(args, "-race")
	}
	if out, err := exec.Command("go", append(args, ".")...).CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, string)
	}{
		{"QemuIOThenSIGTERM", testQemuIOThenSIGTERM},
		{"CacheModes", testCacheModes},
		{"NonPersistentExit", testQcow2NonPersistent},
		{"SnapshotOverlay", testSnapshotOverlay},
		{"LoadSnapshot", testLoadSnapshot},
		{"RawOnQcow2", testRawOnQcow2},
		{"Refused", testRefusedImages},
		{"DirtyRepair", testDirtyRepair},
		{"Metrics", testMetrics},
		{"MetricsBeforeOpen", testMetricsBeforeOpen},
		{"Version", testVersionFlag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.fn(t, bin)
		})
	}
}

// startBin starts bin with args (and extra environment) and kills it if the test ends first.
func startBin(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	return startProc(t, cmd)
}

// stop sends SIGTERM and requires exit status 0 and a clean stderr (no race report).
func (p *proc) stop() {
	p.t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(20 * time.Second); code != 0 {
		p.t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.stderr)
	}
	if strings.Contains(p.stderr.String(), "DATA RACE") {
		p.t.Fatalf("race report:\n%s", p.stderr)
	}
}

func qcow2Image(t *testing.T, opts string, size string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.qcow2")
	args := []string{"create", "-q", "-f", "qcow2"}
	if opts != "" {
		args = append(args, "-o", opts)
	}
	tool(t, "qemu-img", append(args, p, size)...)
	return p
}

// qemuIOScript runs qemu-io commands against target (an NBD URI, or a file of format) and
// fails on any verification or I/O error.
func qemuIOScript(t *testing.T, format, target string, cmds ...string) string {
	t.Helper()
	args := []string{"-f", format}
	for _, c := range cmds {
		if c == "-r" { // open read-only
			args = append(args, c)
			continue
		}
		args = append(args, "-c", c)
	}
	out := tool(t, "qemu-io", append(args, target)...)
	for _, bad := range []string{"verification failed", "error", "failed"} {
		if strings.Contains(out, bad) {
			t.Fatalf("qemu-io %q on %s:\n%s", cmds, target, out)
		}
	}
	return out
}

// checkImage requires qemu-img check to be clean and the dirty bit clear.
func checkImage(t *testing.T, path string) {
	t.Helper()
	corpus.RequireClean(t, path)
	if dirty(t, path) {
		t.Errorf("%s: dirty bit still set", path)
	}
}

func dirty(t *testing.T, path string) bool {
	t.Helper()
	info := tool(t, "qemu-img", "info", "-U", "--output=json", path)
	return strings.Contains(info, `"dirty-flag": true`)
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// writeScript is a qemu-io session touching every write-side command: writes (one FUA),
// write-zeroes with and without unmap, discard, flush.
var writeScript = []string{
	"write -P 0x5a 0 1M",
	"write -P 0x6b 1536k 100k",
	"write -f -P 0x7c 3M 4k",
	"write -z 512k 128k",
	"write -z -u 2M 64k",
	"discard 1536k 64k",
	"flush",
}

var readScript = []string{
	"read -P 0x5a 0 512k",
	"read -P 0 512k 128k",
	"read -P 0x5a 640k 384k",
	"read -P 0 1536k 64k",
	"read -P 0x6b 1600k 36k",
	"read -P 0 2M 64k",
	"read -P 0x7c 3M 4k",
}

// shadowOf applies writeScript to a raw file of size bytes: what the image must read as.
func shadowOf(t *testing.T, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "shadow.raw")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	qemuIOScript(t, "raw", p, writeScript...)
	return p
}

func testQemuIOThenSIGTERM(t *testing.T, bin string) {
	img := qcow2Image(t, "lazy_refcounts=on", "8M")
	sock := filepath.Join(t.TempDir(), "s")
	p := startBin(t, bin, nil, "-t", "-k", sock, "--discard=unmap", img)
	waitDial(t, "unix", sock)
	uri := unixURI(sock, "")
	qemuIOScript(t, "raw", uri, writeScript...)
	qemuIOScript(t, "raw", uri, readScript...)
	// Lazy refcounts: the engine set the dirty bit before its first allocating write.
	if !dirty(t, img) {
		t.Error("dirty bit not set while serving a lazy-refcounts image")
	}
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri, shadowOf(t, 8<<20))
	m := tool(t, "nbdinfo", "--map", uri)
	if !strings.Contains(m, "hole,zero") || !strings.Contains(m, "data") {
		t.Errorf("nbdinfo --map:\n%s", m)
	}
	p.stop()
	checkImage(t, img)
	tool(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, shadowOf(t, 8<<20))
}

func testCacheModes(t *testing.T, bin string) {
	for _, mode := range []string{"none", "writethrough", "directsync", "unsafe", "writeback"} {
		t.Run(mode, func(t *testing.T) {
			img := qcow2Image(t, "cluster_size=4096", "4M")
			sock := filepath.Join(t.TempDir(), "s")
			p := startBin(t, bin, nil, "-t", "-k", sock, "--cache="+mode, "--discard=unmap", img)
			waitDial(t, "unix", sock)
			uri := unixURI(sock, "")
			qemuIOScript(t, "raw", uri, writeScript...)
			qemuIOScript(t, "raw", uri, readScript...)
			p.stop()
			checkImage(t, img)
			tool(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, shadowOf(t, 4<<20))
		})
	}
}

func testQcow2NonPersistent(t *testing.T, bin string) {
	img := qcow2Image(t, "", "4M")
	sock := filepath.Join(t.TempDir(), "s")
	p := startBin(t, bin, nil, "-k", sock, img)
	waitDial(t, "unix", sock)
	qemuIOScript(t, "raw", unixURI(sock, ""), "write -P 0x11 0 64k")
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit %d after the last client left; stderr:\n%s", code, p.stderr)
	}
	checkImage(t, img)
	qemuIOScript(t, "qcow2", img, "read -P 0x11 0 64k")
}

func testSnapshotOverlay(t *testing.T, bin string) {
	tmp := t.TempDir()
	for _, format := range []string{"qcow2", "raw"} {
		t.Run(format, func(t *testing.T) {
			var img string
			if format == "qcow2" {
				img = qcow2Image(t, "", "4M")
				qemuIOScript(t, "qcow2", img, "write -P 0x21 0 1M")
			} else {
				img = image(t, 4<<20)
				qemuIOScript(t, "raw", img, "write -P 0x21 0 1M")
			}
			before := fileHash(t, img)
			sock := filepath.Join(t.TempDir(), "s")
			p := startBin(t, bin, []string{"TMPDIR=" + tmp}, "-t", "-s", "-k", sock, img)
			waitDial(t, "unix", sock)
			uri := unixURI(sock, "")
			qemuIOScript(t, "raw", uri, "read -P 0x21 0 1M", "write -P 0x22 512k 1M", "write -z 0 64k")
			qemuIOScript(t, "raw", uri, "read -P 0 0 64k", "read -P 0x21 64k 448k", "read -P 0x22 512k 1M")
			if hash := fileHash(t, img); hash != before {
				t.Error("-s changed the image while serving")
			}
			p.stop()
			if hash := fileHash(t, img); hash != before {
				t.Error("-s changed the image")
			}
			if left, _ := filepath.Glob(filepath.Join(tmp, "*")); len(left) != 0 {
				t.Errorf("overlay left behind in $TMPDIR: %v", left)
			}
		})
	}
}

func testLoadSnapshot(t *testing.T, bin string) {
	img := qcow2Image(t, "", "4M")
	qemuIOScript(t, "qcow2", img, "write -P 0x31 0 1M")
	tool(t, "qemu-img", "snapshot", "-c", "before", img)
	qemuIOScript(t, "qcow2", img, "write -P 0x32 0 512k", "write -P 0x33 2M 64k")
	before := fileHash(t, img)
	for _, spec := range []string{"before", "1", "snapshot.name=before", "snapshot.id=1"} {
		sock := filepath.Join(t.TempDir(), "s")
		p := startBin(t, bin, nil, "-t", "-l", spec, "-k", sock, img)
		waitDial(t, "unix", sock)
		uri := unixURI(sock, "")
		qemuIOScript(t, "raw", uri, "-r", "read -P 0x31 0 1M", "read -P 0 2M 64k")
		if info := tool(t, "nbdinfo", uri); !strings.Contains(info, "is_read_only: true") {
			t.Errorf("-l %s: export not read-only:\n%s", spec, info)
		}
		// qemu-io opens a read-only export read-write only to be refused.
		if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write 0 512", uri).CombinedOutput(); err == nil || !strings.Contains(string(out), "ermission denied") {
			t.Errorf("-l %s: write accepted:\n%s", spec, out)
		}
		p.stop()
	}
	if fileHash(t, img) != before {
		t.Error("-l changed the image")
	}
	// The current state is still there, and a missing snapshot is one line.
	qemuIOScript(t, "qcow2", img, "read -P 0x32 0 512k")
	cmd := exec.Command(bin, "-k", filepath.Join(t.TempDir(), "s"), "-l", "nosuch", img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), "nosuch") {
		t.Errorf("-l nosuch: %v %q", err, stderr.String())
	}
}

func testRawOnQcow2(t *testing.T, bin string) {
	img := qcow2Image(t, "", "4M")
	qemuIOScript(t, "qcow2", img, "write -P 0x41 0 64k")
	sock := filepath.Join(t.TempDir(), "s")
	p := startBin(t, bin, nil, "-t", "-r", "-f", "raw", "-k", sock, img)
	waitDial(t, "unix", sock)
	uri := unixURI(sock, "")
	// The export is the file's bytes: header and all.
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri, img)
	p.stop()
}

// poke writes b at off of the file at path.
func poke(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func testRefusedImages(t *testing.T, bin string) {
	type mk func(t *testing.T) string
	withHeader := func(off int64, b []byte) mk {
		return func(t *testing.T) string {
			p := qcow2Image(t, "", "4M")
			qemuIOScript(t, "qcow2", p, "write -P 0x51 0 64k")
			poke(t, p, off, b)
			return p
		}
	}
	for _, tc := range []struct {
		name string
		make mk
		args []string
		want string
	}{
		{"corrupt-bit", withHeader(79, []byte{0x02}), nil, "corrupt"},
		{"unknown-incompatible-bit", withHeader(79, []byte{0x20}), nil, "unsupported"},
		{"unknown-incompatible-bit-read-only", withHeader(72, []byte{0x80}), []string{"-r"}, "unsupported"},
		{"encrypted", withHeader(32, []byte{0, 0, 0, 1}), nil, "encrypt"},
		{"version-9", withHeader(4, []byte{0, 0, 0, 9}), nil, "version"},
		{"cluster-bits-30", withHeader(20, []byte{0, 0, 0, 30}), nil, "cluster_bits"},
		{"l1-past-eof", withHeader(40, []byte{0, 0, 0, 0, 0x10, 0, 0, 0}), nil, "l1"},
		{"truncated", func(t *testing.T) string {
			p := qcow2Image(t, "", "4M")
			os.Truncate(p, 50)
			return p
		}, nil, "qcow2"},
		{"raw-as-qcow2", func(t *testing.T) string { return image(t, 1<<20) }, []string{"-f", "qcow2"}, "qcow2"},
		{"missing-backing", func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "top.qcow2")
			tool(t, "qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", p, "4M")
			return p
		}, nil, "gone.qcow2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.make(t)
			before := fileHash(t, img)
			args := append([]string{"-k", filepath.Join(t.TempDir(), "s")}, tc.args...)
			cmd := exec.Command(bin, append(args, img)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 1 {
				t.Errorf("exit: %v, want 1", err)
			}
			s := stderr.String()
			if strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "qnbd: ") || !strings.Contains(strings.ToLower(s), tc.want) {
				t.Errorf("stderr %q, want one line mentioning %q", s, tc.want)
			}
			if fileHash(t, img) != before {
				t.Error("the refused image was changed")
			}
		})
	}
}

func testDirtyRepair(t *testing.T, bin string) {
	src := corpus.Lookup(corpus.Shared(t), "dirty-lazy-refcounts")
	if src == nil {
		t.Fatal("corpus has no dirty-lazy-refcounts image")
	}
	cp, err := corpus.Copy(context.Background(), src, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !dirty(t, cp.Path) {
		t.Fatal("corpus image is not dirty")
	}
	sock := filepath.Join(t.TempDir(), "s")
	// qemu-nbd repairs silently; qnbd says so in its own log, at warn level.
	p := startBin(t, bin, nil, "-t", "--log-level=warn", "-k", sock, cp.Path)
	waitDial(t, "unix", sock)
	uri := unixURI(sock, "")
	want := make([]byte, cp.Size)
	cp.Expected(0, want)
	raw := filepath.Join(t.TempDir(), "want.raw")
	if err := os.WriteFile(raw, want, 0o644); err != nil {
		t.Fatal(err)
	}
	tool(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", uri, raw)
	qemuIOScript(t, "raw", uri, "write -P 0x61 0 64k")
	p.stop()
	// Lines other than the log's are qemu-nbd's (waitDial's probe closes at once).
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(p.stderr.String()), "\n") {
		if !strings.HasPrefix(l, "qnbd: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !strings.Contains(lines[0], "dirty") || !strings.Contains(lines[0], cp.Path) {
		t.Errorf("stderr, want one line about the repair:\n%s", p.stderr)
	}
	checkImage(t, cp.Path)
}

// freeAddr returns a loopback TCP address, below the ephemeral range, that nothing
// listened on a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	return loopport.Addr(t)
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue returns the value of the first sample of family name whose labels include every
// label in want (`op="write"`), or -1 when there is none.
func metricValue(text, name string, want ...string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		ok := true
		for _, w := range want {
			if !strings.Contains(m[1], w) {
				ok = false
			}
		}
		if ok {
			v, err := strconv.ParseFloat(m[2], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

func testMetrics(t *testing.T, bin string) {
	img := qcow2Image(t, "", "8M")
	sock := filepath.Join(t.TempDir(), "s")
	addr := freeAddr(t)
	p := startBin(t, bin, nil, "-t", "-k", sock, "-x", "disk0", "--metrics-addr", addr, img)
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _ := httpGet(t, base+"/readyz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) || !p.running() {
			t.Fatalf("/readyz never 200; stderr:\n%s", p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := httpGet(t, base+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz %d", code)
	}
	waitDial(t, "unix", sock)
	_, before := httpGet(t, base+"/metrics")
	writes := metricValue(before, "qnbd_nbd_requests_total", `export="disk0"`, `op="write"`, `result="ok"`)
	if writes != 0 {
		t.Fatalf("qnbd_nbd_requests_total{op=write} = %v before any request, want 0\n%s", writes, before)
	}
	if v := metricValue(before, "qnbd_build_info", `version="`+testVersion+`"`); v != 1 {
		t.Errorf("qnbd_build_info{version=%q} = %v", testVersion, v)
	}
	qemuIOScript(t, "raw", unixURI(sock, "disk0"), "write -P 1 0 64k", "write -P 2 1M 64k", "write -P 3 2M 64k", "flush")
	_, after := httpGet(t, base+"/metrics")
	if got := metricValue(after, "qnbd_nbd_requests_total", `export="disk0"`, `op="write"`, `result="ok"`); got < 3 {
		t.Errorf("qnbd_nbd_requests_total{op=write,result=ok} = %v after 3 writes", got)
	}
	if got := metricValue(after, "qnbd_nbd_bytes_total", `export="disk0"`, `op="write"`); got < 3*64<<10 {
		t.Errorf("qnbd_nbd_bytes_total{op=write} = %v", got)
	}
	if got := metricValue(after, "qnbd_qcow2_clusters_allocated_total", `export="disk0"`, `kind="data"`); got < 3 {
		t.Errorf("qnbd_qcow2_clusters_allocated_total{kind=data} = %v: engine hooks not wired", got)
	}
	if got := metricValue(after, "qnbd_qcow2_flushes_total", `export="disk0"`); got < 1 {
		t.Errorf("qnbd_qcow2_flushes_total = %v", got)
	}
	if got := metricValue(after, "qnbd_nbd_handshakes_total", `result="ok"`); got < 1 {
		t.Errorf("qnbd_nbd_handshakes_total{result=ok} = %v: server hooks not wired", got)
	}
	p.stop()
	checkImage(t, img)
	// A busy metrics address is one line and exit 1, before any image is touched.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cmd := exec.Command(bin, "-k", filepath.Join(t.TempDir(), "s2"), "--metrics-addr", ln.Addr().String(), img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || strings.Count(stderr.String(), "\n") != 1 || !strings.Contains(stderr.String(), "--metrics-addr") {
		t.Errorf("busy metrics address: %v %q", err, stderr.String())
	}
}

// testMetricsBeforeOpen serves a FIFO as the image: opening it blocks until the test writes,
// which stands for a long startup (a dirty image being repaired). Meanwhile /healthz must
// answer and /readyz must say not ready; then the image turns out invalid: one line, exit 1.
func testMetricsBeforeOpen(t *testing.T, bin string) {
	fifo := filepath.Join(t.TempDir(), "slow.qcow2")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	p := startBin(t, bin, nil, "-r", "-f", "qcow2", "-k", filepath.Join(t.TempDir(), "s"), "--metrics-addr", addr, fifo)
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _ := httpGet(t, base+"/healthz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) || !p.running() {
			t.Fatalf("/healthz never answered while the image was opening; stderr:\n%s", p.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := httpGet(t, base+"/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while opening: %d %q, want 503", code, body)
	}
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 512))
	w.Close()
	if code := p.wait(20 * time.Second); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	if s := p.stderr.String(); strings.Count(s, "\n") != 1 || !strings.HasPrefix(s, "qnbd: Failed to blk_new_open") {
		t.Errorf("stderr %q, want one line", s)
	}
}

func testVersionFlag(t *testing.T, bin string) {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.Contains(string(out), testVersion) {
		t.Errorf("--version: %v %q, want %q", err, out, testVersion)
	}
}
