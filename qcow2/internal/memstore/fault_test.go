package memstore_test

import (
	"bytes"
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

func TestRuleOnce(t *testing.T) {
	s := memstore.New()
	r := &memstore.Rule{Kind: memstore.OpWrite, Nth: 3, Err: syscall.ENOSPC}
	s.Inject(r)
	var errs []error
	for i := 0; i < 5; i++ {
		_, err := s.WriteAt([]byte{byte('a' + i)}, int64(i))
		errs = append(errs, err)
	}
	for i, err := range errs {
		if (i == 2) != (err != nil) {
			t.Fatalf("write %d: %v", i+1, err)
		}
	}
	if !errors.Is(errs[2], syscall.ENOSPC) {
		t.Fatalf("got %v, want ENOSPC", errs[2])
	}
	// The failed write had no effect.
	got, _ := s.Bytes(100)
	if !bytes.Equal(got, []byte{'a', 'b', 0, 'd', 'e'}) {
		t.Fatalf("contents %q", got)
	}
	if s.Count(memstore.OpWrite) != 5 || s.Failures() != 1 || r.Seen() != 5 {
		t.Fatalf("count %d failures %d seen %d", s.Count(memstore.OpWrite), s.Failures(), r.Seen())
	}
	// Reads are not affected by a write rule.
	if _, err := s.ReadAt(make([]byte, 5), 0); err != nil {
		t.Fatal(err)
	}
}

func TestRulePersistentSyncAndMatch(t *testing.T) {
	s := memstore.New()
	s.WriteAt([]byte("abc"), 0)
	s.Inject(memstore.Rules{
		&memstore.Rule{Kind: memstore.OpSync, Nth: 2, Persistent: true},
		&memstore.Rule{Kind: memstore.OpRead, Match: func(op memstore.Op) bool { return op.Off >= 100 }},
	})
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.WriteAt([]byte("xyz"), 0)
	for i := 0; i < 3; i++ {
		if err := s.Sync(); !errors.Is(err, syscall.EIO) {
			t.Fatalf("sync %d: %v, want EIO", i+2, err)
		}
	}
	if s.Pending() != 1 {
		t.Fatal("a failed sync made writes durable")
	}
	if _, err := s.ReadAt(make([]byte, 1), 0); err != nil {
		t.Fatalf("read outside Match failed: %v", err)
	}
	if _, err := s.ReadAt(make([]byte, 1), 200); !errors.Is(err, syscall.EIO) {
		t.Fatalf("first read inside Match: %v", err)
	}
	// A once-rule does not fail again: past the end the read now gives io.EOF.
	if _, err := s.ReadAt(make([]byte, 1), 200); err != io.EOF {
		t.Fatalf("second read inside Match: %v, want io.EOF", err)
	}
	s.Inject(nil)
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
}

func TestRuleTruncateAndPunch(t *testing.T) {
	s := memstore.FromBytes([]byte("0123456789"))
	s.Inject(memstore.Rules{
		&memstore.Rule{Kind: memstore.OpTruncate},
		&memstore.Rule{Kind: memstore.OpPunchHole},
	})
	if err := s.Truncate(2); err == nil {
		t.Fatal("truncate did not fail")
	}
	if err := s.PunchHole(0, 5); err == nil {
		t.Fatal("punch did not fail")
	}
	got, _ := s.Bytes(100)
	if string(got) != "0123456789" {
		t.Fatalf("failed operations changed the store: %q", got)
	}
	if err := s.Truncate(2); err != nil {
		t.Fatal(err)
	}
	if err := s.PunchHole(0, 1); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Bytes(100)
	if !bytes.Equal(got, []byte{0, '1'}) {
		t.Fatalf("contents %q", got)
	}
}

func TestInjectorFunc(t *testing.T) {
	s := memstore.New()
	var seen []memstore.Op
	s.Inject(memstore.InjectorFunc(func(op memstore.Op) error {
		seen = append(seen, op)
		return nil
	}))
	s.WriteAt([]byte("hello"), 7)
	s.Sync()
	s.ReadAt(make([]byte, 2), 8)
	want := []string{"write 7+5", "sync", "read 8+2"}
	if len(seen) != len(want) {
		t.Fatalf("saw %v", seen)
	}
	for i := range want {
		if seen[i].String() != want[i] {
			t.Fatalf("op %d: %q, want %q", i, seen[i], want[i])
		}
	}
}
