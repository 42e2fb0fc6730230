// Probed raw images against qemu-nbd: the format-confusion attack (a qcow2 header naming a
// host file, written through a probed raw export) fails end to end, the block-0 guard refuses
// and allows the same changes with the same errnos, and the warning matches (docs/probing.md).
package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/e2e/libnbd"
)

// serverBins are the servers compared: qnbd and the reference.
var serverBins = []struct {
	name  string
	start func(*testing.T, serverConfig) *server
}{{"qnbd", startQnbd}, {"qemu-nbd", startQemuNBD}}

// unstrict is a setup that lets libnbd send requests not aligned to the advertised minimum
// block size (a probed raw export advertises 512).
func unstrict(h *libnbd.Handle) error { return h.SetStrictMode(0) }

// errnoOf is the errno of a libnbd call's result, 0 for success.
func errnoOf(err error) syscall.Errno {
	var le *libnbd.Error
	if err == nil {
		return 0
	}
	if errors.As(err, &le) && le.Errno != 0 {
		return le.Errno
	}
	return syscall.EIO
}

// probedWarning is qemu-nbd's warning for a read-write probed raw image named file.
func probedWarning(file string) string {
	return "WARNING: Image format was not specified for '" + file + "' and probing guessed raw.\n" +
		"         Automatically detecting the format is dangerous for raw images, write operations on block 0 will be restricted.\n" +
		"         Specify the 'raw' format explicitly to remove the restrictions.\n"
}

// TestProbedRawAttackFails: a client of a probed raw export writes a qcow2 image whose
// backing file is a host file it must not read; the write is refused (EPERM) and, served
// again without -f, the file is still raw and the secret is not readable. With -f raw the
// same write is accepted, and the next probing open then reads the secret through the
// backing chain: the guard is what stops the attack. An ordinary write to block 0 (a boot
// sector) succeeds. qemu-nbd is run through the same steps and must agree.
func TestProbedRawAttackFails(t *testing.T) {
	for _, bin := range serverBins {
		t.Run(bin.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			secret := filepath.Join(dir, "secret")
			want := bytes.Repeat([]byte("host secret, never to be served "), 2048) // 64 KiB
			if err := os.WriteFile(secret, want, 0o600); err != nil {
				t.Fatal(err)
			}
			evil := filepath.Join(dir, "evil.qcow2")
			run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", evil, "1M")
			header, err := os.ReadFile(evil)
			if err != nil {
				t.Fatal(err)
			}
			header = append(header, make([]byte, (512-len(header)%512)%512)...) // whole sectors
			disk := newRaw(t, dir, 1<<20)

			// 1. Probed, read-write: the header is refused, a boot sector is not.
			s := bin.start(t, serverConfig{Args: []string{disk}})
			h := connect(t, s, "", nil)
			if bs, err := h.GetBlockSize(0); err != nil || bs != 512 {
				t.Errorf("probed raw: minimum block size %d, %v; want 512", bs, err)
			}
			if e := errnoOf(h.Pwrite(header, 0, 0)); e != syscall.EPERM {
				t.Errorf("qcow2 header over a probed raw image: errno %v, want EPERM", e)
			}
			boot := make([]byte, 512)
			copy(boot, "\xeb\x63\x90qnbd boot sector")
			boot[510], boot[511] = 0x55, 0xaa
			if err := h.Pwrite(boot, 0, 0); err != nil {
				t.Errorf("boot sector on a probed raw image: %v", err)
			}
			got := make([]byte, 512)
			if err := h.Pread(got, 0, 0); err != nil || !bytes.Equal(got, boot) {
				t.Errorf("boot sector read back: %v", err)
			}
			disconnect(h)
			s.Stop()
			if out := strings.ReplaceAll(serverStderr(s), dir, "DIR"); out != probedWarning("DIR/disk.raw") {
				t.Errorf("stderr of a probed read-write raw export:\n%s\nwant:\n%s", out, probedWarning("DIR/disk.raw"))
			}

			// 2. Served again without -f: still raw, no secret.
			if f := qemuImgFormat(t, disk); f != "raw" {
				t.Fatalf("after the refused write the image probes as %s", f)
			}
			s = bin.start(t, serverConfig{Args: []string{"-r", disk}})
			if b := readAll(t, s, len(want)); bytes.Contains(b, want[:64]) {
				t.Errorf("the secret is readable through the probed raw image")
			}
			s.Stop()
			if out := serverStderr(s); out != "" {
				t.Errorf("stderr of a probed read-only raw export: %q, want nothing", out)
			}

			// 3. Without the guard (-f raw) the same write is accepted, and the attack works.
			s = bin.start(t, serverConfig{Args: []string{"-f", "raw", disk}})
			h = connect(t, s, "", nil)
			if err := h.Pwrite(header, 0, 0); err != nil {
				t.Errorf("qcow2 header with -f raw: %v", err)
			}
			disconnect(h)
			s.Stop()
			if f := qemuImgFormat(t, disk); f != "qcow2" {
				t.Fatalf("after the -f raw write the image probes as %s, want qcow2", f)
			}
			s = bin.start(t, serverConfig{Args: []string{"-r", disk}})
			if b := readAll(t, s, len(want)); !bytes.Equal(b, want) {
				t.Errorf("the unguarded attack did not expose the secret: the test proves nothing")
			}
			s.Stop()
		})
	}
}

// qemuImgFormat is the format qemu-img info probes path as, or its error when the probed
// format cannot open the file.
func qemuImgFormat(t *testing.T, path string) string {
	t.Helper()
	r := runCode(t, "qemu-img", "info", "-U", path)
	for _, l := range lines(r.Stdout) {
		if f, ok := strings.CutPrefix(l, "file format: "); ok {
			return f
		}
	}
	return "unopenable: " + strings.TrimSpace(r.Stderr)
}

// serverStderr is what s printed. (The readiness probe of startServer ends with a clean
// ABORT, which neither server reports.)
func serverStderr(s *server) string { return s.Output() }

// disconnect ends a libnbd connection cleanly (NBD_CMD_DISC), so that the server has nothing
// to report.
func disconnect(h *libnbd.Handle) {
	h.Shutdown(0)
	h.Close()
}

// readAll reads the first n bytes of s's default export.
func readAll(t *testing.T, s *server, n int) []byte {
	t.Helper()
	h := connect(t, s, "", nil)
	defer disconnect(h)
	b := make([]byte, n)
	if err := h.Pread(b, 0, 0); err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

// guardStep is one change sent to a probed raw export.
type guardStep struct {
	name string
	do   func(h *libnbd.Handle) error
}

// bochsHeader is a minimal bochs header; with x set the byte after its magic is 'x', which
// makes it raw.
func bochsHeader(x bool) []byte {
	b := make([]byte, 512)
	copy(b, "Bochs Virtual HD Image")
	if x {
		b[22] = 'x'
	}
	copy(b[32:], "Redolog")
	copy(b[48:], "Growing")
	b[66] = 2 // version 0x00020000, little endian
	return b
}

// guardSteps are applied in order to a 1 MiB probed raw export with --discard=unmap.
var guardSteps = []guardStep{
	{"boot sector", func(h *libnbd.Handle) error {
		b := make([]byte, 512)
		b[510], b[511] = 0x55, 0xaa
		return h.Pwrite(b, 0, 0)
	}},
	{"qcow2 version at 4", func(h *libnbd.Handle) error { return h.Pwrite([]byte{0, 0, 0, 3}, 4, 0) }},
	{"qcow2 magic at 0", func(h *libnbd.Handle) error { return h.Pwrite([]byte("QFI\xfb"), 0, 0) }},
	{"qcow2 magic at 512", func(h *libnbd.Handle) error { return h.Pwrite([]byte("QFI\xfb\x00\x00\x00\x03"), 512, 0) }},
	{"vmdk magic sector", func(h *libnbd.Handle) error { return h.Pwrite(append([]byte("KDMV"), make([]byte, 508)...), 0, 0) }},
	{"vmdk descriptor", func(h *libnbd.Handle) error {
		return h.Pwrite([]byte("# Disk DescriptorFile\nversion=1\nCID=fffffffe\n"), 0, 0)
	}},
	{"vpc magic", func(h *libnbd.Handle) error { return h.Pwrite([]byte("conectix"), 0, 0) }},
	{"luks magic", func(h *libnbd.Handle) error { return h.Pwrite([]byte("LUKS\xba\xbe\x00\x01"), 0, 0) }},
	{"unterminated bochs", func(h *libnbd.Handle) error { return h.Pwrite(bochsHeader(true), 0, 0) }},
	{"bochs", func(h *libnbd.Handle) error { return h.Pwrite(bochsHeader(false), 0, 0) }},
	{"zero the byte after the bochs magic", func(h *libnbd.Handle) error { return h.Zero(1, 22, 0) }},
	{"zero block 0", func(h *libnbd.Handle) error { return h.Zero(512, 0, 0) }},
	{"unterminated bochs again", func(h *libnbd.Handle) error { return h.Pwrite(bochsHeader(true), 0, 0) }},
	{"zero a straddling range", func(h *libnbd.Handle) error { return h.Zero(1000, 300, 0) }},
	{"trim block 1", func(h *libnbd.Handle) error { return h.Trim(512, 512, 0) }},
}

// TestProbedRawGuardMatchesQemuNBD runs guardSteps against qnbd and qemu-nbd, each on its own
// probed raw image, and requires the same errno for every step and the same file afterwards.
// Then it trims the byte after the unterminated bochs magic: qemu-nbd does not check trims
// and lets it turn the image into a bochs one; qnbd refuses it (a deliberate difference).
func TestProbedRawGuardMatchesQemuNBD(t *testing.T) {
	t.Parallel()
	type outcome struct {
		errnos []syscall.Errno
		file   []byte
		trim   syscall.Errno
		format string
	}
	results := make([]outcome, len(serverBins))
	for i, bin := range serverBins {
		dir := t.TempDir()
		disk := newRaw(t, dir, 1<<20)
		s := bin.start(t, serverConfig{Args: []string{"--discard=unmap", disk}})
		h := connect(t, s, "", unstrict)
		for _, st := range guardSteps {
			results[i].errnos = append(results[i].errnos, errnoOf(st.do(h)))
		}
		b, err := os.ReadFile(disk)
		if err != nil {
			t.Fatal(err)
		}
		results[i].file = b
		results[i].trim = errnoOf(h.Trim(1, 22, 0))
		disconnect(h)
		s.Stop()
		results[i].format = qemuImgFormat(t, disk)
	}
	q, ref := results[0], results[1]
	for j, st := range guardSteps {
		if q.errnos[j] != ref.errnos[j] {
			t.Errorf("%s: qnbd errno %v, qemu-nbd errno %v", st.name, q.errnos[j], ref.errnos[j])
		}
	}
	if !bytes.Equal(q.file, ref.file) {
		t.Errorf("the images differ after the same steps")
	}
	refused := 0
	for _, e := range ref.errnos {
		if e == syscall.EPERM {
			refused++
		}
	}
	if refused < 6 {
		t.Errorf("qemu-nbd refused %d steps (%v): the steps no longer test the guard", refused, ref.errnos)
	}
	// qemu-img cannot open the minimal bochs header it now probes as: "Extent size must be
	// at least 512" is the bochs driver's complaint.
	if ref.trim != 0 || !strings.Contains(ref.format, "Extent size") {
		t.Logf("qemu-nbd's trim after the bochs magic: errno %v, image now %s (expected 0, bochs)", ref.trim, ref.format)
	}
	if q.trim != syscall.EPERM || q.format != "raw" {
		t.Errorf("qnbd's trim after the bochs magic: errno %v, image now %s; want EPERM, raw", q.trim, q.format)
	}
}

// TestProbedForeignFormatRefused: a file that probes as a format qnbd does not serve (here
// a VMDK, which qemu-nbd would serve) is refused at start with one line, and -f raw serves
// its bytes.
func TestProbedForeignFormatRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	img := filepath.Join(dir, "d.vmdk")
	run(t, "qemu-img", "create", "-q", "-f", "vmdk", img, "1M")
	r := runCode(t, qnbdBin, "-k", filepath.Join(shortTempDir(t), "s"), img)
	if r.Code != 1 || len(lines(r.Stderr)) != 1 || !strings.Contains(r.Stderr, "vmdk") || !strings.Contains(r.Stderr, "-f raw") {
		t.Errorf("probed vmdk: exit %d, stderr %q; want 1 and one line naming vmdk and -f raw", r.Code, r.Stderr)
	}
	s := startQnbd(t, serverConfig{Args: []string{"-r", "-f", "raw", img}})
	if b := readAll(t, s, 4); string(b) != "KDMV" {
		t.Errorf("-f raw: first bytes %q", b)
	}
}

// TestRawSizesMatchQemuNBD serves raw files whose length is not a multiple of 512, probed and
// with -f raw, read-only and not, and requires nbdinfo --json to match qemu-nbd's, block
// sizes included (a 1000-byte file is a 1024-byte export; probed ones advertise 512).
func TestRawSizesMatchQemuNBD(t *testing.T) {
	for _, size := range []int64{1000, 1<<20 + 100} {
		for _, args := range [][]string{nil, {"-r"}, {"-f", "raw"}, {"-f", "raw", "-r"}} {
			t.Run(fmt.Sprintf("%d%s", size, strings.Join(args, "")), func(t *testing.T) {
				t.Parallel()
				var infos []nbdinfoJSON
				for _, bin := range serverBins {
					disk := newRaw(t, t.TempDir(), size)
					s := bin.start(t, serverConfig{Args: append(append([]string{}, args...), disk)})
					infos = append(infos, nbdinfo(t, s.URI("")))
					s.Stop()
				}
				if fmt.Sprint(infos[0]) != fmt.Sprint(infos[1]) {
					t.Errorf("nbdinfo --json:\nqnbd:     %+v\nqemu-nbd: %+v", infos[0], infos[1])
				}
				if e := infos[0].Exports; len(e) != 1 || e[0].Size != (size+511)/512*512 {
					t.Errorf("export size %+v, want %d", e, (size+511)/512*512)
				}
			})
		}
	}
}

// tailSteps change the zero tail of a 1000-byte file (exported as 1024 bytes).
var tailSteps = []guardStep{
	{"write the last byte", func(h *libnbd.Handle) error { return h.Pwrite([]byte{1}, 1023, 0) }},
	{"write at the end of the file", func(h *libnbd.Handle) error { return h.Pwrite([]byte{1}, 1000, 0) }},
	{"write inside the file's last sector", func(h *libnbd.Handle) error { return h.Pwrite([]byte{1}, 600, 0) }},
	{"write inside the file", func(h *libnbd.Handle) error { return h.Pwrite([]byte{1}, 10, 0) }},
	{"zero the tail", func(h *libnbd.Handle) error { return h.Zero(24, 1000, 0) }},
	{"zero the tail, no hole", func(h *libnbd.Handle) error { return h.Zero(24, 1000, libnbd.CmdFlagNoHole) }},
	{"zero part of the tail", func(h *libnbd.Handle) error { return h.Zero(10, 1000, 0) }},
	{"zero the last sector, no hole", func(h *libnbd.Handle) error { return h.Zero(512, 512, libnbd.CmdFlagNoHole) }},
	{"trim the tail", func(h *libnbd.Handle) error { return h.Trim(24, 1000, 0) }},
	{"read the tail", func(h *libnbd.Handle) error {
		b := make([]byte, 24)
		if err := h.Pread(b, 1000, 0); err != nil {
			return err
		}
		if !bytes.Equal(b, make([]byte, 24)) {
			return fmt.Errorf("tail reads %x", b)
		}
		return nil
	}},
}

// TestRawTailMatchesQemuNBD applies each of tailSteps to a fresh 1000-byte file served by
// qnbd and by qemu-nbd, probed and with -f raw, and requires the same errno and the same file
// afterwards (length included: a probed image grows its partial last sector whole).
func TestRawTailMatchesQemuNBD(t *testing.T) {
	for _, args := range [][]string{nil, {"-f", "raw"}} {
		for _, st := range tailSteps {
			t.Run(strings.Join(args, "")+"/"+st.name, func(t *testing.T) {
				t.Parallel()
				var files [][]byte
				var errs []error
				for _, bin := range serverBins {
					disk := newRaw(t, t.TempDir(), 1000)
					s := bin.start(t, serverConfig{Args: append(append([]string{"--discard=unmap"}, args...), disk)})
					h := connect(t, s, "", unstrict)
					errs = append(errs, st.do(h))
					disconnect(h)
					s.Stop()
					b, err := os.ReadFile(disk)
					if err != nil {
						t.Fatal(err)
					}
					files = append(files, b)
				}
				if errnoOf(errs[0]) != errnoOf(errs[1]) || errs[1] != nil {
					t.Errorf("qnbd: %v; qemu-nbd: %v", errs[0], errs[1])
				}
				if len(files[0]) != len(files[1]) || !bytes.Equal(files[0], files[1]) {
					t.Errorf("file afterwards: qnbd %d bytes, qemu-nbd %d bytes (or different contents)", len(files[0]), len(files[1]))
				}
			})
		}
	}
}
