package qcow2

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// TestFaultInjection fails the n-th write or sync of the image file (once: a transient error;
// or from then on: a dead disk), for many n across a workload that allocates, grows the
// reftable, evicts tables, zeroes, discards and flushes. Whatever fails, the engine returns
// errors (never panics), never marks the image corrupt for an I/O error, and leaves a file
// that qemu-img check finds consistent (leaks allowed) and that reopens; after reopening and a
// clean close, it is still consistent.
func TestFaultInjection(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := engCreate(t, dir, "f.qcow2", "cluster_size=512", "16M")
	base := storeOf(t, p)
	step := 41
	if *longTests {
		step = 1
	}
	for _, kind := range []memstore.OpKind{memstore.OpWrite, memstore.OpSync} {
		for _, persistent := range []bool{false, true} {
			for nth := 1; nth < 300; nth += step {
				name := fmt.Sprintf("%s-%d-persistent=%v", kind, nth, persistent)
				s := base.Clone()
				img, err := OpenStorage(s, dir, OpenOptions{L2CacheBytes: 1})
				if err != nil {
					t.Fatal(err)
				}
				rule := &memstore.Rule{Kind: kind, Nth: nth, Persistent: persistent}
				s.Inject(rule)
				faultWorkload(img)
				img.Close()
				s.Inject(nil)
				if rule.Seen() < nth {
					break // the workload has fewer operations of this kind
				}
				if h, err := ReadHeader(s.Reopen()); err != nil || h.Corrupt() {
					t.Fatalf("%s: header %v, corrupt bit set for an I/O error", name, err)
				}
				faultCheck(t, name, dir, s.Reopen())
				img2, err := OpenStorage(s.Reopen(), dir, OpenOptions{})
				if err != nil {
					t.Fatalf("%s: reopen: %v", name, err)
				}
				engWriteNoT(img2)
				if err := img2.Close(); err != nil {
					t.Fatalf("%s: close after reopen: %v", name, err)
				}
				faultCheck(t, name+" after reopen", dir, s.Reopen())
			}
		}
	}
}

func faultWorkload(img *Image) {
	// Past 8 MiB of file the one-cluster reftable of a 512-byte-cluster image is full: this
	// write makes it grow.
	big := make([]byte, 9<<20)
	fillPattern(big, 1)
	_, _ = img.WriteAt(big, 0)
	buf := make([]byte, 20000)
	fillPattern(buf, 5)
	for i := int64(0); i < 40; i++ {
		_, _ = img.WriteAt(buf[:1000+i*300], i*190000%(7<<20))
		if i%5 == 0 {
			_ = img.Zero(GuestOffset(uint64(i*100000%(6<<20))), 5000, unmapFlag(i%10 == 0))
		}
		if i%7 == 0 {
			_ = img.Discard(GuestOffset(uint64(i*150000%(6<<20))), 4096)
		}
		if i%9 == 0 {
			_ = img.Flush()
		}
	}
}

func engWriteNoT(img *Image) {
	_, _ = img.WriteAt(make([]byte, 5000), 123456)
}

func faultCheck(t *testing.T, name, dir string, s *memstore.Store) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "f.qcow2")
	if err := s.WriteFile(f); err != nil {
		t.Fatal(err)
	}
	if q := corpus.QemuCheck(t, f, corpus.CheckOptions{}); q.ExitCode != 0 && q.ExitCode != 3 {
		t.Fatalf("%s: qemu-img check %v", name, q)
	}
}
