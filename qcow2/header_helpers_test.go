// Shared by the header robustness tests: the parse an open does, a measured run of it (no panic,
// bounded memory and time), qemu-img info as the oracle, and the check that an error is clean.
package qcow2

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// parseAll is what an open does with the header before touching data: the header with its
// extensions, the snapshot table (LoadSnapshots, as Open reads it), then the bitmap directory
// and tables (ValidateBitmaps).
func parseAll(s Storage) error {
	h, err := ReadHeader(s)
	if err != nil {
		return err
	}
	if _, err = LoadSnapshots(s, h); err != nil {
		return err
	}
	return ValidateBitmaps(s, h)
}

// runMeasured runs fn, failing the test on a panic, more than 256 MiB allocated, or more than
// a second.
func runMeasured(t *testing.T, what string, fn func() error) (err error) {
	t.Helper()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%s: panic: %v", what, r)
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		err = fn()
	}()
	el := time.Since(start)
	runtime.ReadMemStats(&after)
	if a := after.TotalAlloc - before.TotalAlloc; a > 256<<20 {
		t.Errorf("%s: allocated %d MiB", what, a>>20)
	}
	// A bound on a runaway loop (a hostile count walked to 2^32), far above the
	// milliseconds this takes, so that a loaded machine cannot trip it.
	if el > 30*time.Second {
		t.Errorf("%s: took %v", what, el)
	}
	return err
}

// qemuAccepts reports whether `qemu-img info` opens the image in s (it opens the qcow2 layer
// fully, reading the snapshot table and the bitmap directory, but not the backing file).
func qemuAccepts(t *testing.T, s *memstore.Store, dir string) (bool, string) {
	t.Helper()
	p := filepath.Join(dir, "case.qcow2")
	if err := s.WriteFile(p); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	return qemuInfoOK(t, p)
}

// qemuInfoOK runs qemu-img info on the image at path. It is safe to call from several
// goroutines. The timeout only catches a hang: with nb_snapshots at 0xffff qemu-img reads
// every entry with its own pread and takes 6 s of CPU on an idle machine, and CI runs four
// of these beside the race-enabled test packages, where 30 s was once not enough.
func qemuInfoOK(t *testing.T, path string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "-f", "qcow2", path).CombinedOutput()
	if ctx.Err() != nil {
		t.Errorf("qemu-img info %s timed out", path)
	}
	return err == nil, strings.TrimSpace(string(out))
}

// classify checks that err is a clean error whose FormatError (if any) names one of names. A
// verdict on the bitmap directory or tables (a *BitmapOpenError in QEMU's words, naming no
// header field) is clean as well when names include a bitmaps extension field.
func classify(err error, names []string) error {
	if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrUnsupported) {
		return fmt.Errorf("error %v is neither ErrFormat nor ErrUnsupported", err)
	}
	var fe *FormatError
	var be *BitmapOpenError
	if !errors.As(err, &fe) && errors.As(err, &be) && (slices.Contains(names, "nb_bitmaps") || slices.Contains(names, "size")) {
		return nil
	}
	if !errors.As(err, &fe) {
		return fmt.Errorf("error %v is not a *FormatError", err)
	}
	if !slices.Contains(names, fe.Field) {
		return fmt.Errorf("error names field %q, want one of %q: %v", fe.Field, names, err)
	}
	return nil
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// storeOf loads the image file at path into a memstore.Store.
func storeOf(t *testing.T, path string) *memstore.Store {
	t.Helper()
	s, err := memstore.FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
