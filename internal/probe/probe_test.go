// Tests of Format and File: every format QEMU probes for is recognised, near misses and
// ordinary disk contents are raw, and QEMU agrees (qemu-io's block-0 guard is the oracle).
package probe

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestFormatRecognisesEveryQemuFormat(t *testing.T) {
	for name, b := range foreignHeaders() {
		want := strings.Fields(name)[0]
		if got := Format(b, ""); got != want {
			t.Errorf("%s: Format = %s, want %s", name, got, want)
		}
	}
	for name, b := range rawHeaders() {
		if got := Format(b, ""); got != Raw {
			t.Errorf("%s: Format = %s, want raw", name, got)
		}
	}
}

func TestFormatDmgByNameOnly(t *testing.T) {
	zeros := make([]byte, BufSize)
	for name, want := range map[string]string{"a.dmg": "dmg", "/x/disk.dmg": "dmg", ".dmg": Raw, "a.DMG": Raw, "a.dmg.raw": Raw, "": Raw} {
		if got := Format(zeros, name); got != want {
			t.Errorf("Format(zeros, %q) = %s, want %s", name, got, want)
		}
	}
	// Content outranks the name: a qcow2 header named .dmg is qcow2.
	if got := Format(foreignHeaders()["qcow2"], "x.dmg"); got != "qcow2" {
		t.Errorf("qcow2 named .dmg: %s", got)
	}
}

// A header shorter than a driver's minimum still matches once zero-padded, as QEMU pads its
// probe buffer: File pads, so an 8-byte file holding a qcow2 magic and version is qcow2.
func TestFileZeroPadsShortFiles(t *testing.T) {
	dir := t.TempDir()
	for name, tt := range map[string]struct {
		content string
		want    string
	}{
		"empty":      {"", Raw},
		"qcow2 8":    {"QFI\xfb\x00\x00\x00\x03", "qcow2"},
		"vdi at 64":  {strings.Repeat("\x00", 0x40) + "\x7f\x10\xda\xbe", "vdi"},
		"three":      {"QFI", Raw},
		"empty.dmg":  {"", Raw},
		"zeros.dmg":  {"\x00", "dmg"},
		"vpc in 512": {"conectix", "vpc"},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := File(p); err != nil || got != tt.want {
			t.Errorf("%s: File = %s, %v; want %s", name, got, err, tt.want)
		}
	}
	if _, err := File(filepath.Join(dir, "missing")); !os.IsNotExist(err) {
		t.Errorf("missing file: %v", err)
	}
}

// qemuGuardRefuses writes block0 over the first sector of a probed raw image with qemu-io
// and reports whether QEMU's raw driver refused it (EPERM).
func qemuGuardRefuses(t *testing.T, dir, name string, block0 []byte) bool {
	t.Helper()
	img := filepath.Join(dir, name+".img")
	src := filepath.Join(dir, name+".src")
	if err := os.WriteFile(img, make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(src, block0, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("qemu-io", "-c", "write -s "+src+" 0 512", img).CombinedOutput()
	refused := strings.Contains(string(out), "write failed: Operation not permitted")
	if !refused && (err != nil || !strings.Contains(string(out), "wrote 512/512")) {
		t.Fatalf("%s: qemu-io: %v\n%s", name, err, out)
	}
	return refused
}

// TestFormatAgreesWithQemuGuard: for every header and every raw first sector, qemu-io's
// probed-raw write refuses it exactly when Format says it is not raw.
func TestFormatAgreesWithQemuGuard(t *testing.T) {
	dir := t.TempDir()
	all := foreignHeaders()
	for k, v := range rawHeaders() {
		all[k] = v
	}
	for name, b := range all {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			ours := Format(b, "") != Raw
			if qemu := qemuGuardRefuses(t, dir, strings.ReplaceAll(name, " ", "_"), b); ours != qemu {
				t.Errorf("%s: we refuse %v, QEMU refuses %v", name, ours, qemu)
			}
		})
	}
}

// TestFileAgreesWithQemuImg: images made by qemu-img create probe as the format they were
// made in, as qemu-img info reports it.
func TestFileAgreesWithQemuImg(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		format string
		opts   []string
	}{
		{"qcow2", nil},
		{"qcow", nil},
		{"qed", nil},
		{"vmdk", nil},
		{"vmdk", []string{"-o", "subformat=monolithicFlat"}}, // a text descriptor file
		{"vdi", nil},
		{"vhdx", nil},
		{"vpc", nil},
		{"parallels", nil},
		{"luks", []string{"--object", "secret,id=s0,data=pw", "-o", "key-secret=s0"}},
	} {
		p := filepath.Join(dir, tt.format+strings.Join(tt.opts, "_"))
		args := append([]string{"create", "-q", "-f", tt.format}, tt.opts...)
		if out, err := exec.Command("qemu-img", append(args, p, "1M")...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create -f %s: %v\n%s", tt.format, err, out)
		}
		got, err := File(p)
		if err != nil || got != tt.format {
			t.Errorf("image made as %s %v: File = %s, %v", tt.format, tt.opts, got, err)
		}
	}
}
