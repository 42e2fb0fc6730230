// Tests of the binding against real servers: qemu-nbd over a qcow2 image and nbdkit memory.
package libnbd

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestInfoFromQemuNBD(t *testing.T) {
	img := newQcow2(t, "16M")
	sock := startQemuNBD(t, img, "--discard=unmap", "-A")
	h := connect(t, sock, func(h *Handle) error {
		if err := h.AddMetaContext(ContextBaseAllocation); err != nil {
			return err
		}
		return h.AddMetaContext(ContextQemuAllocationDepth)
	})
	size, err := h.GetSize()
	must(t, err)
	if size != 16<<20 {
		t.Errorf("GetSize = %d, want %d", size, 16<<20)
	}
	for _, c := range []struct {
		name string
		f    func() (bool, error)
		want bool
	}{
		{"IsReadOnly", h.IsReadOnly, false},
		{"CanFlush", h.CanFlush, true},
		{"CanFua", h.CanFua, true},
		{"CanTrim", h.CanTrim, true},
		{"CanZero", h.CanZero, true},
		{"CanFastZero", h.CanFastZero, true},
		{"CanDF", h.CanDF, true},
		{"CanCache", h.CanCache, true},
		{"CanMultiConn", h.CanMultiConn, true}, // qemu-nbd -e 8
		{"GetStructuredRepliesNegotiated", h.GetStructuredRepliesNegotiated, true},
		{"GetTLSNegotiated", h.GetTLSNegotiated, false},
	} {
		got, err := c.f()
		mustBool(t, c.name, got, err, c.want)
	}
	for _, ctx := range []string{ContextBaseAllocation, ContextQemuAllocationDepth} {
		got, err := h.CanMetaContext(ctx)
		mustBool(t, "CanMetaContext("+ctx+")", got, err, true)
	}
	got, err := h.CanMetaContext("qemu:dirty-bitmap:none")
	mustBool(t, "CanMetaContext(not requested)", got, err, false)
	proto, err := h.GetProtocol()
	must(t, err)
	if proto != "newstyle-fixed" {
		t.Errorf("GetProtocol = %q, want newstyle-fixed", proto)
	}
	maxBS, err := h.GetBlockSize(SizeMaximum)
	must(t, err)
	minBS, err := h.GetBlockSize(SizeMinimum)
	must(t, err)
	if minBS < 1 || maxBS < minBS {
		t.Errorf("block sizes min %d max %d", minBS, maxBS)
	}
	if st := h.ConnectionState(); !strings.HasPrefix(st, "READY") {
		t.Errorf("ConnectionState = %q, want READY...", st)
	}
}

// TestReadWriteReachImage writes through qemu-nbd and checks the image with qemu-io, so the
// binding is judged by the image file, not by reading back through itself.
func TestReadWriteReachImage(t *testing.T) {
	img := newQcow2(t, "8M")
	sock := startQemuNBD(t, img)
	h := connect(t, sock, nil)

	// An unaligned write spanning a cluster boundary, with FUA.
	data := bytes.Repeat([]byte{0xa5}, 70000)
	const off = 65536 - 1000
	must(t, h.Pwrite(data, off, CmdFlagFUA))
	// A second write with a position-dependent pattern.
	pat := pattern(7, 4096)
	must(t, h.Pwrite(pat, 1<<20, 0))
	must(t, h.Flush(0))

	got := make([]byte, len(data)+2000)
	must(t, h.Pread(got, off-1000, CmdFlagDF))
	want := append(append(make([]byte, 1000), data...), make([]byte, 1000)...)
	if !bytes.Equal(got, want) {
		t.Fatalf("Pread after Pwrite: mismatch at byte %d", firstDiff(got, want))
	}
	got = make([]byte, 4096)
	must(t, h.Pread(got, 1<<20, 0))
	if !bytes.Equal(got, pat) {
		t.Fatalf("Pread of pattern: mismatch at byte %d", firstDiff(got, pat))
	}
	must(t, h.Shutdown(0))
	must(t, h.Close())

	// qemu-io opens the image while qemu-nbd still has it: -U shares the lock, read-only.
	out := run(t, "qemu-io", "-r", "-U", "-f", "qcow2",
		"-c", fmt.Sprintf("read -P 0xa5 %d %d", off, len(data)),
		"-c", fmt.Sprintf("read -P 0 %d 1000", off-1000),
		"-c", fmt.Sprintf("read -P 0 %d 1000", off+len(data)),
		img)
	if strings.Contains(out, "Pattern verification failed") {
		t.Fatalf("image does not hold what was written:\n%s", out)
	}
}

func TestZeroTrimCacheBlockStatus(t *testing.T) {
	img := newQcow2(t, "4M")
	sock := startQemuNBD(t, img, "--discard=unmap")
	h := connect(t, sock, func(h *Handle) error { return h.AddMetaContext(ContextBaseAllocation) })

	const mib = 1 << 20
	must(t, h.Pwrite(bytes.Repeat([]byte{1}, 2*mib), 0, 0))
	must(t, h.Zero(256<<10, 256<<10, 0))
	must(t, h.Zero(64<<10, 1*mib, CmdFlagNoHole|CmdFlagFUA))
	must(t, h.Trim(512<<10, 1*mib+512<<10, 0))
	must(t, h.Cache(mib, 0, 0))

	// Reads see zeros where zeroed or trimmed, data elsewhere.
	buf := make([]byte, 4*mib)
	must(t, h.Pread(buf, 0, 0))
	for _, r := range []struct {
		off, n int
		val    byte
	}{
		{0, 256 << 10, 1}, {256 << 10, 256 << 10, 0}, {512 << 10, 512 << 10, 1},
		{mib, 64 << 10, 0}, {mib + 64<<10, 448 << 10, 1}, {mib + 512<<10, 512 << 10, 0},
		{2 * mib, 2 * mib, 0},
	} {
		if i := bytes.IndexFunc(buf[r.off:r.off+r.n], func(c rune) bool { return byte(c) != r.val }); i >= 0 {
			t.Errorf("byte %d = %d, want %d", r.off+i, buf[r.off+i], r.val)
		}
	}

	// Block status: the extents tile the request, data is reported as data, the never-written
	// tail as a hole reading as zeros.
	var calls int
	var next uint64
	flagsAt := map[uint64]uint32{}
	err := h.BlockStatus(4*mib, 0, 0, func(ctx string, off uint64, ext []Extent) error {
		calls++
		if ctx != ContextBaseAllocation {
			t.Errorf("context %q", ctx)
		}
		if off != next {
			t.Errorf("chunk starts at %d, want %d", off, next)
		}
		for _, e := range ext {
			flagsAt[next] = e.Flags
			next += uint64(e.Length)
		}
		return nil
	})
	must(t, err)
	if calls == 0 || next < 4*mib {
		t.Fatalf("block status covered %d bytes in %d calls", next, calls)
	}
	if f := flagsAt[0]; f != 0 {
		t.Errorf("extent at 0 has flags %d, want 0 (data)", f)
	}
	tail := lookup(flagsAt, 3*mib)
	if tail != StateHole|StateZero {
		t.Errorf("unwritten tail has flags %d, want hole|zero", tail)
	}
	if z := lookup(flagsAt, 256<<10+4096); z&StateZero == 0 {
		t.Errorf("zeroed range has flags %d, want zero set", z)
	}
	if callbacks.live() != 0 {
		t.Errorf("%d callbacks still registered after BlockStatus", callbacks.live())
	}

	// REQ_ONE: one extent per reply.
	err = h.BlockStatus(4*mib, 0, CmdFlagReqOne, func(_ string, _ uint64, ext []Extent) error {
		if len(ext) != 1 {
			t.Errorf("REQ_ONE reply has %d extents", len(ext))
		}
		return nil
	})
	must(t, err)

	// An error from the callback fails the command and comes back unchanged.
	errStop := errors.New("stop here")
	err = h.BlockStatus(4*mib, 0, 0, func(string, uint64, []Extent) error { return errStop })
	if !errors.Is(err, errStop) {
		t.Fatalf("BlockStatus with failing callback = %v, want %v", err, errStop)
	}
	// The connection is still usable afterwards.
	must(t, h.Pread(make([]byte, 512), 0, 0))
	if callbacks.live() != 0 {
		t.Errorf("%d callbacks still registered", callbacks.live())
	}
}

// lookup finds the flags of the extent containing off.
func lookup(flagsAt map[uint64]uint32, off uint64) uint32 {
	var best uint64
	for start := range flagsAt {
		if start <= off && start >= best {
			best = start
		}
	}
	return flagsAt[best]
}

func TestAioManyInFlight(t *testing.T) {
	sock := startNbdkitMemory(t, "64M")
	h := connect(t, sock, nil)
	const n, bs = 64, 4096

	cookies := map[Cookie]int{}
	for i := 0; i < n; i++ {
		c, err := h.AioPwrite(pattern(byte(i), bs), uint64(i*3*bs), 0)
		must(t, err)
		cookies[c] = i
	}
	inFlight, err := h.AioInFlight()
	must(t, err)
	if inFlight != n {
		t.Errorf("AioInFlight = %d after queuing %d writes", inFlight, n)
	}
	for len(cookies) > 0 {
		c, err := h.AioWaitAny()
		must(t, err)
		if _, ok := cookies[c]; !ok {
			t.Fatalf("AioWaitAny returned unknown cookie %d", c)
		}
		delete(cookies, c)
	}
	if _, err := h.AioPeekCommandCompleted(); err == nil {
		t.Errorf("AioPeekCommandCompleted with nothing in flight succeeded")
	}

	fc, err := h.AioFlush(0)
	must(t, err)
	must(t, h.AioWait(fc))

	bufs := make([][]byte, n)
	readCookies := make([]Cookie, n)
	for i := range bufs {
		bufs[i] = make([]byte, bs)
		readCookies[i], err = h.AioPread(bufs[i], uint64(i*3*bs), 0)
		must(t, err)
	}
	for i := n - 1; i >= 0; i-- { // retire in reverse order of issue
		must(t, h.AioWait(readCookies[i]))
		if !bytes.Equal(bufs[i], pattern(byte(i), bs)) {
			t.Fatalf("read %d: mismatch at byte %d", i, firstDiff(bufs[i], pattern(byte(i), bs)))
		}
	}

	zc, err := h.AioZero(bs, 0, 0)
	must(t, err)
	tc, err := h.AioTrim(bs, 3*bs, 0)
	must(t, err)
	must(t, h.AioWait(zc))
	must(t, h.AioWait(tc))
	buf := make([]byte, 4*bs)
	must(t, h.Pread(buf, 0, 0))
	if !bytes.Equal(buf[:bs], make([]byte, bs)) || !bytes.Equal(buf[3*bs:], make([]byte, bs)) {
		t.Errorf("zeroed/trimmed blocks do not read as zeros")
	}
	if live := callbacks.live(); live != 0 {
		t.Errorf("%d buffers still pinned after every command was retired", live)
	}

	// A request libnbd refuses locally (zero length) fails at once and releases its buffer.
	if _, err := h.AioPread(nil, 0, 0); err == nil {
		t.Errorf("zero-length AioPread succeeded")
	}
	if _, err := h.AioPwrite(make([]byte, bs), 1<<40, 0); err == nil {
		t.Errorf("AioPwrite beyond the end succeeded")
	}
	if live := callbacks.live(); live != 0 {
		t.Errorf("%d buffers still pinned after refused commands", live)
	}

	// Commands left in flight are released by Close.
	for i := 0; i < 8; i++ {
		_, err := h.AioPread(make([]byte, bs), 0, 0)
		must(t, err)
	}
	must(t, h.Close())
	if live := callbacks.live(); live != 0 {
		t.Errorf("%d buffers still pinned after Close", live)
	}
	if _, err := h.GetSize(); !errors.Is(err, ErrClosed) {
		t.Errorf("GetSize after Close = %v, want ErrClosed", err)
	}
}

func TestErrorsCarryMessageAndErrno(t *testing.T) {
	sock := startNbdkitMemory(t, "1M")
	h := connect(t, sock, nil)

	// Refused by libnbd itself (strict bounds).
	err := h.Pread(make([]byte, 512), 1<<20, 0)
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Pread beyond the end = %v, want *Error", err)
	}
	if e.Op != "nbd_pread" || !strings.Contains(e.Msg, "nbd_pread") || e.Errno != syscall.EINVAL {
		t.Errorf("error = %+v, want op nbd_pread, message naming it, EINVAL", e)
	}
	if !errors.Is(err, syscall.EINVAL) {
		t.Errorf("errors.Is(%v, EINVAL) = false", err)
	}

	// Sent to the server with strict checks off: the server's error comes back.
	must(t, h.SetStrictMode(0))
	err = h.Pwrite(make([]byte, 512), 1<<20, 0)
	if !errors.As(err, &e) || e.Errno == 0 {
		t.Fatalf("server-side error = %v, want *Error with errno", err)
	}
	// The connection survives a failed request.
	must(t, h.Pread(make([]byte, 512), 0, 0))

	h2, err := Create()
	must(t, err)
	defer h2.Close()
	err = h2.ConnectUnix(filepath.Join(t.TempDir(), "missing.sock"))
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("connect to a missing socket = %v, want ENOENT", err)
	}
}

func TestOptModeListInfoGo(t *testing.T) {
	img := newQcow2(t, "3M")
	sock := startQemuNBD(t, img, "-x", "disk1", "-D", "the test disk", "-A")
	h, err := Create()
	must(t, err)
	defer h.Close()
	must(t, h.SetOptMode(true))
	must(t, h.SetFullInfo(true))
	must(t, h.ConnectUnix(sock))

	exports, err := h.OptList()
	must(t, err)
	if len(exports) != 1 || exports[0].Name != "disk1" || exports[0].Description != "the test disk" {
		t.Errorf("OptList = %+v, want one export disk1 described", exports)
	}
	must(t, h.SetExportName("disk1"))
	contexts, err := h.OptListMetaContext()
	must(t, err)
	if !contains(contexts, ContextBaseAllocation) || !contains(contexts, ContextQemuAllocationDepth) {
		t.Errorf("OptListMetaContext = %v", contexts)
	}

	must(t, h.SetExportName("nosuch"))
	if err := h.OptInfo(); err == nil {
		t.Errorf("OptInfo for a missing export succeeded")
	}
	must(t, h.SetExportName("disk1"))
	must(t, h.OptInfo())
	size, err := h.GetSize()
	must(t, err)
	if size != 3<<20 {
		t.Errorf("size after OptInfo = %d", size)
	}
	must(t, h.OptGo())
	name, err := h.GetCanonicalExportName()
	must(t, err)
	desc, err := h.GetExportDescription()
	must(t, err)
	if name != "disk1" || desc != "the test disk" {
		t.Errorf("canonical name %q description %q", name, desc)
	}
	must(t, h.Pread(make([]byte, 4096), 0, 0))
	if callbacks.live() != 0 {
		t.Errorf("%d callbacks still registered", callbacks.live())
	}
}

func TestConnectTCPAndURI(t *testing.T) {
	img := newQcow2(t, "1M")
	port := freePort(t)
	startServer(t, "", port, "qemu-nbd", "-t", "-e", "4", "-f", "qcow2", "-x", "exp",
		"-b", "127.0.0.1", "-p", strconv.Itoa(port), img)

	h1, err := Create()
	must(t, err)
	defer h1.Close()
	must(t, h1.SetExportName("exp"))
	must(t, h1.ConnectTCP("127.0.0.1", port))
	must(t, h1.Pwrite([]byte("hello"), 100, 0))

	h2, err := Create()
	must(t, err)
	defer h2.Close()
	must(t, h2.ConnectURI(fmt.Sprintf("nbd://127.0.0.1:%d/exp", port)))
	got := make([]byte, 5)
	must(t, h2.Pread(got, 100, 0))
	if string(got) != "hello" {
		t.Errorf("second connection reads %q", got)
	}
}

func TestConnectCommandAndSocketActivation(t *testing.T) {
	h, err := Create()
	must(t, err)
	defer h.Close()
	must(t, h.ConnectCommand([]string{"nbdkit", "-s", "--exit-with-parent", "memory", "1M"}))
	size, err := h.GetSize()
	must(t, err)
	if size != 1<<20 {
		t.Errorf("size = %d", size)
	}

	h2, err := Create()
	must(t, err)
	defer h2.Close()
	must(t, h2.ConnectSystemdSocketActivation([]string{"nbdkit", "--exit-with-parent", "memory", "2M"}))
	size, err = h2.GetSize()
	must(t, err)
	if size != 2<<20 {
		t.Errorf("size = %d", size)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func firstDiff(a, b []byte) int {
	for i := range a {
		if i >= len(b) || a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

// TestStructuredReadChunks checks that PreadStructured reports the chunks a server sends:
// qemu-nbd answers a read over a sparse range with data and hole chunks, and with DF set
// with a single data chunk.
func TestStructuredReadChunks(t *testing.T) {
	img := newQcow2(t, "1M")
	sock := startQemuNBD(t, img)
	h := connect(t, sock, nil)
	must(t, h.Pwrite(bytes.Repeat([]byte{9}, 64<<10), 0, 0))

	const n = 256 << 10
	var chunks []Chunk
	buf := make([]byte, n)
	must(t, h.PreadStructured(buf, 0, 0, func(c Chunk) error { chunks = append(chunks, c); return nil }))
	var covered uint64
	var kinds = map[ReadStatus]int{}
	for _, c := range chunks {
		covered += c.Length
		kinds[c.Status]++
	}
	if covered != n || kinds[ReadData] == 0 || kinds[ReadHole] == 0 {
		t.Errorf("sparse read chunks %+v: want data and hole chunks covering %d bytes", chunks, n)
	}
	if !bytes.Equal(buf[:64<<10], bytes.Repeat([]byte{9}, 64<<10)) || !bytes.Equal(buf[64<<10:], make([]byte, n-64<<10)) {
		t.Errorf("structured read returned wrong data")
	}

	chunks = nil
	must(t, h.PreadStructured(buf, 0, CmdFlagDF, func(c Chunk) error { chunks = append(chunks, c); return nil }))
	if len(chunks) != 1 || chunks[0].Status != ReadData || chunks[0].Length != n {
		t.Errorf("DF read chunks %+v: want one data chunk of %d bytes", chunks, n)
	}
	errStop := errors.New("stop")
	err := h.PreadStructured(buf, 0, 0, func(Chunk) error { return errStop })
	if !errors.Is(err, errStop) {
		t.Errorf("PreadStructured with failing callback = %v", err)
	}
	if callbacks.live() != 0 {
		t.Errorf("%d callbacks still registered", callbacks.live())
	}
}

// TestFastZeroFlagReachesServer uses nbdkit's nozero filter, which fails every fast-zero
// request with ENOTSUP: the flag must reach the server, and the errno come back.
func TestFastZeroFlagReachesServer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	startServer(t, sock, 0, "nbdkit", "-f", "--exit-with-parent", "-U", sock,
		"--filter=nozero", "memory", "1M", "zeromode=emulate", "fastzeromode=slow")
	h := connect(t, sock, nil)
	can, err := h.CanFastZero()
	mustBool(t, "CanFastZero", can, err, true)
	must(t, h.Pwrite(bytes.Repeat([]byte{3}, 8192), 0, 0))
	err = h.Zero(4096, 0, CmdFlagFastZero)
	if !errors.Is(err, syscall.ENOTSUP) {
		t.Fatalf("fast zero through fastzeromode=slow = %v, want ENOTSUP", err)
	}
	buf := make([]byte, 8192)
	must(t, h.Pread(buf, 0, 0))
	if !bytes.Equal(buf, bytes.Repeat([]byte{3}, 8192)) {
		t.Fatalf("a failed fast zero changed the data")
	}
	must(t, h.Zero(4096, 0, 0)) // the slow path works
	must(t, h.Pread(buf, 0, 0))
	if !bytes.Equal(buf[:4096], make([]byte, 4096)) || !bytes.Equal(buf[4096:], bytes.Repeat([]byte{3}, 4096)) {
		t.Fatalf("zero without FAST_ZERO did not zero exactly its range")
	}
}
