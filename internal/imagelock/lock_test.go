// Lock/Unlock/Others on real files: the bytes in /proc/locks, the conflict rules between two
// open file descriptions, release on failure and on close.
package imagelock

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// tempFile creates a small regular file.
func tempFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func open(t *testing.T, p string, flag int) *os.File {
	t.Helper()
	f, err := os.OpenFile(p, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// procLocks lists the bytes of p that have an OFD read lock, from /proc/locks, sorted.
func procLocks(t *testing.T, p string) []int {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino
	lf, err := os.Open("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	var bytes []int
	sc := bufio.NewScanner(lf)
	for sc.Scan() {
		// "1: OFDLCK ADVISORY  READ  -1 08:01:1234 100 100"
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[1] != "OFDLCK" || !strings.HasSuffix(f[5], ":"+strconv.FormatUint(ino, 10)) {
			continue
		}
		if f[3] != "READ" {
			t.Errorf("lock of type %s on %s: %s", f[3], p, sc.Text())
		}
		start, _ := strconv.Atoi(f[6])
		end, _ := strconv.Atoi(f[7])
		for b := start; b <= end; b++ {
			bytes = append(bytes, b)
		}
	}
	sort.Ints(bytes)
	return bytes
}

func TestLockBytesInProcLocks(t *testing.T) {
	for _, tc := range []struct {
		perm, shared Perm
		want         []int
	}{
		{ConsistentRead | Write | Resize, All &^ (Write | Resize), []int{100, 101, 103, 201, 203}},
		{ConsistentRead, All, []int{100}},
		{0, All &^ (Write | Resize), []int{201, 203}},
		{All, 0, []int{100, 101, 102, 103, 200, 201, 202, 203}},
		{0, All, nil},
	} {
		p := tempFile(t)
		f := open(t, p, os.O_RDWR)
		if err := Lock(f, tc.perm, tc.shared); err != nil {
			t.Fatalf("Lock(%q, shared %q): %v", tc.perm, tc.shared, err)
		}
		if got := procLocks(t, p); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("Lock(%q, shared %q): locked bytes %v, want %v", tc.perm, tc.shared, got, tc.want)
		}
		if err := Unlock(f); err != nil {
			t.Fatal(err)
		}
		if got := procLocks(t, p); len(got) != 0 {
			t.Errorf("after Unlock: bytes %v still locked", got)
		}
	}
}

// TestConflicts opens the file twice (two open file descriptions conflict like two
// processes) and checks QEMU's rule and message for each pair.
func TestConflicts(t *testing.T) {
	const (
		CR, W, RS = ConsistentRead, Write, Resize
	)
	qcowRW := [2]Perm{CR | W | RS, All &^ (W | RS)}
	qcowRO := [2]Perm{CR, All &^ (W | RS)}
	rawRW := [2]Perm{CR | W, All}
	rawRO := [2]Perm{CR, All}
	info := [2]Perm{0, All &^ (W | RS)}
	force := [2]Perm{CR, All}
	for _, tc := range []struct {
		name          string
		first, second [2]Perm
		want          string // "" = no conflict
	}{
		{"qcow2 rw, then rw", qcowRW, qcowRW, `Failed to get "write" lock`},
		{"qcow2 rw, then read-only", qcowRW, qcowRO, `Failed to get shared "write" lock`},
		{"qcow2 rw, then info", qcowRW, info, `Failed to get shared "write" lock`},
		{"qcow2 rw, then force-share", qcowRW, force, ""},
		{"qcow2 read-only, then read-only", qcowRO, qcowRO, ""},
		{"qcow2 read-only, then rw", qcowRO, qcowRW, `Failed to get "write" lock`},
		{"info, then rw", info, qcowRW, `Failed to get "write" lock`},
		{"raw rw, then raw rw", rawRW, rawRW, ""},
		{"raw rw, then qcow2 read-only", rawRW, qcowRO, `Failed to get shared "write" lock`},
		{"raw read-only, then qcow2 rw", rawRO, qcowRW, ""},
		{"unshared consistent read, then reader", [2]Perm{0, All &^ CR}, rawRO, `Failed to get "consistent read" lock`},
		{"resize only, then qcow2 read-only", [2]Perm{RS, All}, qcowRO, `Failed to get shared "resize" lock`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tempFile(t)
			a, b := open(t, p, os.O_RDWR), open(t, p, os.O_RDWR)
			if err := Lock(a, tc.first[0], tc.first[1]); err != nil {
				t.Fatal(err)
			}
			before := procLocks(t, p)
			err := Lock(b, tc.second[0], tc.second[1])
			if tc.want == "" {
				if err != nil {
					t.Fatalf("second Lock: %v, want success", err)
				}
				return
			}
			var le *Error
			if !errors.As(err, &le) || err.Error() != tc.want || !errors.Is(err, ErrLocked) {
				t.Fatalf("second Lock: %v, want %q (an *Error matching ErrLocked)", err, tc.want)
			}
			if h := le.Hint(); h != "Is another process using the image ["+p+"]?" {
				t.Errorf("hint %q", h)
			}
			// The failed Lock left nothing behind: only a's bytes remain.
			if after := procLocks(t, p); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Errorf("bytes after a failed Lock %v, want the first holder's %v", after, before)
			}
		})
	}
}

func TestCloseReleases(t *testing.T) {
	p := tempFile(t)
	a, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := Lock(a, ConsistentRead|Write|Resize, All&^(Write|Resize)); err != nil {
		t.Fatal(err)
	}
	// Closing another descriptor of the same file (a probe) keeps a's locks: OFD semantics.
	probe := open(t, p, os.O_RDONLY)
	probe.Close()
	b := open(t, p, os.O_RDWR)
	if err := Lock(b, ConsistentRead|Write|Resize, All&^(Write|Resize)); !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock while a holds its locks: %v, want ErrLocked", err)
	}
	a.Close()
	if err := Lock(b, ConsistentRead|Write|Resize, All&^(Write|Resize)); err != nil {
		t.Fatalf("Lock after the holder closed: %v", err)
	}
}

func TestOthers(t *testing.T) {
	p := tempFile(t)
	a, b := open(t, p, os.O_RDWR), open(t, p, os.O_RDONLY)
	if err := Lock(a, ConsistentRead|Write|Resize, All&^(Write|Resize)); err != nil {
		t.Fatal(err)
	}
	held, notShared, err := Others(b)
	if err != nil {
		t.Fatal(err)
	}
	if held != ConsistentRead|Write|Resize || notShared != Write|Resize {
		t.Errorf("Others: held %q, not shared %q", held, notShared)
	}
	// A description never sees its own locks.
	if held, notShared, err := Others(a); err != nil || held != 0 || notShared != 0 {
		t.Errorf("Others on the holder itself: %q, %q, %v", held, notShared, err)
	}
}

func TestNotLockable(t *testing.T) {
	f := open(t, "/dev/null", os.O_RDWR) // a character device: not locked, as QEMU's file driver would refuse it
	if err := Lock(f, All, 0); err != nil {
		t.Fatal(err)
	}
	if err := Unlock(f); err != nil {
		t.Fatal(err)
	}
}

func TestErrorText(t *testing.T) {
	for _, tc := range []struct {
		e    *Error
		want string
		is   bool
	}{
		{&Error{Path: "a", Perm: Write}, `Failed to get "write" lock`, true},
		{&Error{Path: "a", Perm: ConsistentRead, Shared: true}, `Failed to get shared "consistent read" lock`, true},
		{&Error{Path: "a", Byte: 101, Err: syscall.EAGAIN}, "Failed to lock byte 101", true},
		{&Error{Path: "a", Byte: 100, Err: syscall.ENOLCK}, "Failed to lock byte 100: No locks available", false},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("%#v: %q, want %q", tc.e, got, tc.want)
		}
		if errors.Is(tc.e, ErrLocked) != tc.is {
			t.Errorf("%#v: errors.Is(ErrLocked) = %v", tc.e, !tc.is)
		}
		if (tc.e.Hint() != "") != (tc.e.Perm != 0) {
			t.Errorf("%#v: hint %q", tc.e, tc.e.Hint())
		}
	}
	if s := (Write | Resize).String(); s != "write, resize" {
		t.Errorf("String: %q", s)
	}
}

// TestForQemuImg pins Request.For for the requests qnbd-img makes to what qemu-img 7.2 locks,
// as read from `strace -e fcntl qemu-img ...` (the table in the package notes).
func TestForQemuImg(t *testing.T) {
	const CR, W, RS = ConsistentRead, Write, Resize
	type pair struct{ perm, notShared Perm }
	for _, tc := range []struct {
		name string
		req  Request
		kind Kind
		want pair
	}{
		{"info qcow2", Request{Shared: All}, Qcow2Image, pair{0, W | RS}},
		{"info raw", Request{Shared: All}, RawImage, pair{0, 0}},
		{"info -U qcow2", Request{Shared: All, ForceShare: true}, Qcow2Image, pair{0, 0}},
		{"map qcow2", Request{Perm: CR, Shared: All}, Qcow2Image, pair{CR, W | RS}},
		{"map qcow2, its qcow2 backing", Request{Perm: CR, Shared: All}, Qcow2Backing, pair{CR, W | RS}},
		{"map qcow2, its raw backing", Request{Perm: CR, Shared: All}, RawBacking, pair{CR, 0}},
		{"map qcow2, its data file", Request{Perm: CR, Shared: All}, DataFile, pair{CR, RS}},
		{"map -U qcow2", Request{Perm: CR, Shared: All, ForceShare: true}, Qcow2Image, pair{CR, 0}},
		{"map -U, data file", Request{Perm: CR, Shared: All, ForceShare: true}, DataFile, pair{CR, 0}},
		{"map raw", Request{Perm: CR, Shared: All}, RawImage, pair{CR, 0}},
		{"check -r all qcow2", Request{Perm: CR | W, Shared: All}, Qcow2Image, pair{CR | W | RS, W | RS}},
		{"check -r all, data file", Request{Perm: CR | W, Shared: All}, DataFile, pair{CR | W | RS, RS}},
		{"resize raw", Request{Perm: CR | W | RS, Shared: All}, RawImage, pair{CR | W | RS, 0}},
		{"convert source raw", Request{Perm: CR, Shared: All &^ (W | RS)}, RawImage, pair{CR, W | RS}},
		{"convert source, raw backing", Request{Perm: CR, Shared: All &^ (W | RS)}, RawBacking, pair{CR, W | RS}},
		{"convert source, data file", Request{Perm: CR, Shared: All &^ (W | RS)}, DataFile, pair{CR, W | RS}},
		{"convert target raw", Request{Perm: CR | W, Shared: All}, RawImage, pair{CR | W, 0}},
		{"convert target qcow2", Request{Perm: CR | W, Shared: All}, Qcow2Image, pair{CR | W | RS, W | RS}},
	} {
		perm, shared := tc.req.For(tc.kind)
		if got := (pair{perm, All &^ shared}); got != tc.want {
			t.Errorf("%s: perm %q, not shared %q; want %q, %q", tc.name, got.perm, got.notShared, tc.want.perm, tc.want.notShared)
		}
	}
}
