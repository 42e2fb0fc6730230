package hostfile

import (
	"errors"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func create(t *testing.T, size int64) *File {
	t.Helper()
	h, err := Open(filepath.Join(t.TempDir(), "f"), Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	if err := h.OS().Truncate(size); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestEverySyncIsCounted(t *testing.T) {
	h := create(t, 4096)
	for i := range 3 {
		if _, err := h.OS().WriteAt([]byte{byte(i)}, 0); err != nil {
			t.Fatal(err)
		}
		if err := h.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.Syncs(); n != 3 {
		t.Fatalf("%d syncs counted, want 3", n)
	}
}

func TestOpenNeverAddsSyncFlags(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, o := range []Options{{Create: true}, {}, {ReadOnly: true}} {
		h, err := Open(p, o)
		if err != nil {
			t.Fatal(err)
		}
		fl, err := h.Flags()
		h.Close()
		if err != nil {
			t.Fatal(err)
		}
		if fl&(unix.O_SYNC|unix.O_DSYNC) != 0 {
			t.Errorf("%+v: opened with flags %#o", o, fl)
		}
		if ro := fl&unix.O_ACCMODE == unix.O_RDONLY; ro != o.ReadOnly {
			t.Errorf("%+v: access mode %#o", o, fl&unix.O_ACCMODE)
		}
	}
}

func TestRefusedModeFailsUnsupportedWithoutSyscall(t *testing.T) {
	h := create(t, 1<<20)
	for _, m := range []struct {
		mode Mode
		call func() error
	}{
		{ModePunchHole, func() error { return h.PunchHole(0, 4096) }},
		{ModeZeroRange, func() error { return h.ZeroRange(0, 4096) }},
		{ModeAllocate, func() error { return h.Allocate(0, 4096) }},
	} {
		h.Refuse(m.mode)
		err := m.call()
		if !errors.Is(err, ErrUnsupported) || !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("mode %d after a refusal: %v, want ErrUnsupported matching EOPNOTSUPP", m.mode, err)
		}
	}
	// An empty range never reaches the file system, refused or not.
	if err := h.PunchHole(0, 0); err != nil {
		t.Errorf("empty punch: %v", err)
	}
}

func TestUnsupportedErrnosAreOneClass(t *testing.T) {
	for _, e := range []unix.Errno{unix.EOPNOTSUPP, unix.ENOSYS, unix.ENOTTY, unix.ENODEV} {
		if !unsupportedErrno(e) {
			t.Errorf("%v not treated as unsupported", e)
		}
	}
	for _, e := range []unix.Errno{unix.EIO, unix.ENOSPC, unix.EINVAL, unix.EBADF} {
		if unsupportedErrno(e) {
			t.Errorf("%v treated as unsupported", e)
		}
	}
}

func TestFailuresNameTheOperationAndFile(t *testing.T) {
	h := create(t, 4096)
	h.Close()
	err := h.Sync()
	if !errors.Is(err, unix.EBADF) || errors.Is(err, ErrUnsupported) {
		t.Fatalf("sync of a closed file: %v", err)
	}
	if want := "fdatasync " + h.Name(); len(err.Error()) < len(want) || err.Error()[:len(want)] != want {
		t.Fatalf("error %q does not start with %q", err, want)
	}
}
