// Tests of Guard: which changes to block 0 of a probed raw image are refused, and that
// concurrent partial writes are checked one at a time.
package probe

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// guarded is a probed raw file of 64 KiB behind a Guard.
type guarded struct {
	f *os.File
	g Guard
}

func newGuarded(t *testing.T) *guarded {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.raw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(64 << 10); err != nil {
		t.Fatal(err)
	}
	return &guarded{f: f}
}

func (d *guarded) write(p []byte, off int64) error {
	return d.g.Change(d.f, uint64(off), uint64(len(p)), Overlay(p), func() error {
		_, err := d.f.WriteAt(p, off)
		return err
	})
}

func (d *guarded) zero(off, n int64) error {
	return d.g.Change(d.f, uint64(off), uint64(n), Zeroed(uint64(n)), func() error {
		_, err := d.f.WriteAt(make([]byte, n), off)
		return err
	})
}

func (d *guarded) block0(t *testing.T) []byte {
	t.Helper()
	b := make([]byte, Block0)
	if _, err := d.f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	return b
}

func wantRefused(t *testing.T, what string, err error) {
	t.Helper()
	var fe *FormatChangeError
	if !errors.Is(err, syscall.EPERM) || !errors.Is(err, ErrWouldChangeFormat) || !errors.As(err, &fe) {
		t.Errorf("%s: %v, want a refusal (EPERM)", what, err)
	}
}

func TestGuardRefusesEveryForeignHeaderAtBlock0(t *testing.T) {
	d := newGuarded(t)
	for name, b := range foreignHeaders() {
		wantRefused(t, name, d.write(b, 0))
		// The whole header in a larger write that starts at block 0: refused as well.
		wantRefused(t, name+" in 4 KiB", d.write(append(b, make([]byte, 4096-len(b))...), 0))
		if got := Format(d.block0(t), ""); got != Raw {
			t.Fatalf("%s: a refused write changed block 0 (probes %s)", name, got)
		}
		// The same bytes anywhere else are data.
		if err := d.write(b, 4096); err != nil {
			t.Errorf("%s at 4096: %v", name, err)
		}
	}
}

func TestGuardLetsOrdinaryBlock0WritesThrough(t *testing.T) {
	d := newGuarded(t)
	for name, b := range rawHeaders() {
		if err := d.write(b, 0); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := d.zero(0, Block0); err != nil {
		t.Errorf("zeroing block 0: %v", err)
	}
}

// Partial writes are judged on the sector they leave behind, as QEMU judges the merged sector.
func TestGuardJudgesPartialWritesOnTheResult(t *testing.T) {
	d := newGuarded(t)
	if err := d.write([]byte{0, 0, 0, 3}, 4); err != nil {
		t.Fatalf("version alone: %v", err)
	}
	if err := d.write([]byte("\xfb"), 3); err != nil {
		t.Fatalf("last magic byte alone: %v", err)
	}
	wantRefused(t, "completing the qcow2 magic", d.write([]byte("QFI"), 0))
	if err := d.write([]byte("QFI"), 0+Block0); err != nil {
		t.Errorf("the same bytes in block 1: %v", err)
	}

	// A bochs magic followed by 'x' is raw; zeroing the 'x' would make it bochs.
	b := foreignHeaders()["bochs"]
	b[22] = 'x'
	if err := d.write(b, 0); err != nil {
		t.Fatalf("unterminated bochs magic: %v", err)
	}
	wantRefused(t, "zeroing the byte after the bochs magic", d.zero(22, 1))
	if err := d.zero(100, 8); err != nil {
		t.Errorf("zeroing elsewhere in block 0: %v", err)
	}
	// A change that straddles block 0 and block 1 is judged on its block-0 part.
	whole := foreignHeaders()["bochs"]
	wantRefused(t, "straddling write", d.write(append(whole[22:], make([]byte, 600)...), 22))
}

// Two concurrent partial writes that each leave block 0 raw but together would make it qcow2:
// one of them must be refused, whatever the interleaving.
func TestGuardSerialisesConcurrentPartialWrites(t *testing.T) {
	for range 50 {
		d := newGuarded(t)
		if err := d.write([]byte{0, 0, 0, 3}, 4); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, w := range []struct {
			p   string
			off int64
		}{{"QF", 0}, {"I\xfb", 2}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = d.write([]byte(w.p), w.off)
			}()
		}
		wg.Wait()
		if got := Format(d.block0(t), ""); got != Raw {
			t.Fatalf("concurrent partial writes made block 0 probe as %s (errors %v)", got, errs)
		}
		if errs[0] == nil && errs[1] == nil {
			t.Fatalf("both halves of the magic were written")
		}
	}
}

func TestNilGuardGuardsNothing(t *testing.T) {
	var g *Guard
	called := false
	err := g.Change(nil, 0, 512, Overlay(foreignHeaders()["qcow2"]), func() error { called = true; return nil })
	if err != nil || !called {
		t.Errorf("nil guard: %v, applied %v", err, called)
	}
}
