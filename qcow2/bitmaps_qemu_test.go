// Persistent bitmaps under qnbd's writes, against QEMU's own state for a writer that stopped
// maintaining them (qemu-io killed after a write).
package qcow2

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// logCount is a slog handler that counts records at warning level and above.
type logCount struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logCount) Enabled(_ context.Context, lv slog.Level) bool { return lv >= slog.LevelWarn }
func (l *logCount) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *logCount) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCount) WithGroup(string) slog.Handler      { return l }

// qemuBitmaps is the bitmap list of qemu-img info --output=json.
func qemuBitmaps(t *testing.T, path string) []any {
	t.Helper()
	out := engQemu(t, "qemu-img", "info", "--output=json", path)
	var info struct {
		FormatSpecific struct {
			Data struct {
				Bitmaps []any `json:"bitmaps"`
			} `json:"data"`
		} `json:"format-specific"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return info.FormatSpecific.Data.Bitmaps
}

// TestBitmapsMarkedInUseLikeQemu: after qnbd writes to an image with persistent bitmaps (one
// of them disabled, and an unknown autoclear bit set), qemu-img check exits 0, and qemu-img
// info shows what it shows after a QEMU writer was killed: every bitmap in-use, the bitmaps
// autoclear bit kept, the unknown one cleared. One warning is logged, once. A resize is
// refused without touching the image; QEMU's bitmap --remove then works and leaves it clean.
func TestBitmapsMarkedInUseLikeQemu(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "b.qcow2", "", "4M")
	engQemu(t, "qemu-img", "bitmap", "--add", p, "b0")
	engQemu(t, "qemu-img", "bitmap", "--add", "-g", "128k", "--disable", p, "b1")
	engQemu(t, "qemu-io", "-c", "write -P 9 1M 64k", p)
	r := engOpenRaw(t, p)
	r.put(offAutoclearFeatures, r.u64(offAutoclearFeatures)|1<<40)
	ours, theirs := filepath.Join(dir, "ours.qcow2"), filepath.Join(dir, "theirs.qcow2")
	engQemu(t, "cp", p, ours)
	engQemu(t, "cp", p, theirs)

	// QEMU: a writer that dies leaves its bitmaps in-use.
	out, _ := exec.Command("qemu-io", "-c", "write -P 1 0 4k", "-c", "sigraise 9", theirs).CombinedOutput()
	if !strings.Contains(string(out), "wrote 4096/4096") {
		t.Fatalf("qemu-io: %s", out)
	}

	logs := &logCount{}
	for range 2 {
		img, err := Open(ours, OpenOptions{Logger: slog.New(logs)})
		if err != nil {
			t.Fatal(err)
		}
		engWrite(t, img, 0, bytes.Repeat([]byte{1}, 4096))
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(logs.msgs) != 1 || !strings.Contains(logs.msgs[0], "bitmaps") {
		t.Errorf("warnings: %q, want one about bitmaps", logs.msgs)
	}
	if code, out := engQemuCheck(t, ours); code != 0 {
		t.Errorf("qemu-img check after our write: exit %d\n%s", code, out)
	}
	if code, out := engQemuCheck(t, theirs); code != 0 {
		t.Fatalf("qemu-img check after QEMU's: exit %d\n%s", code, out)
	}
	if a, b := qemuBitmaps(t, ours), qemuBitmaps(t, theirs); !reflect.DeepEqual(a, b) || len(a) != 2 {
		t.Errorf("bitmaps:\n ours   %v\n QEMU   %v", a, b)
	}
	if a, b := engOpenRaw(t, ours).u64(offAutoclearFeatures), engOpenRaw(t, theirs).u64(offAutoclearFeatures); a != b || a != AutoclearBitmaps {
		t.Errorf("autoclear: ours %#x, QEMU %#x", a, b)
	}
	if d := engFirstDiff(engConvertRaw(t, ours), engConvertRaw(t, theirs)); d != "" {
		t.Errorf("contents: %s", d)
	}

	before, err := os.ReadFile(ours)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Open(ours, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rerr := img.Resize(8 << 20)
	img.Close()
	if rerr == nil || !strings.Contains(rerr.Error(), "bitmaps ('b0', 'b1')") {
		t.Errorf("resize: %v, want a refusal naming the bitmaps", rerr)
	}
	if after, _ := os.ReadFile(ours); !bytes.Equal(before, after) {
		t.Error("the refused resize changed the image")
	}
	if ok, out := runOK("qemu-img", "resize", theirs, "8M"); ok {
		t.Errorf("qemu-img resized an image with in-use bitmaps: %s", out)
	}

	engQemu(t, "qemu-img", "bitmap", "--remove", ours, "b0")
	engQemu(t, "qemu-img", "bitmap", "--remove", ours, "b1")
	engRequireClean(t, ours)
	img = openTestImage(t, ours, OpenOptions{})
	engWrite(t, img, 8192, bytes.Repeat([]byte{2}, 4096))
	if err := img.Resize(8 << 20); err != nil {
		t.Errorf("resize without bitmaps: %v", err)
	}
}
