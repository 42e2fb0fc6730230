// Refcount-table growth (alloc_grow.go): the table grows while refcount decrements are
// still batched, and every crash state of that stays free of corruption.
package qcow2

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// TestRefTableGrowthWithPendingFreesIsCrashSafe: 512 discards wait in the free batch while a write
// needs a larger refcount table (512-byte clusters, 64-bit refcounts: one reftable cluster
// covers 2 MiB), then Flush applies the frees through the new table and later writes reuse
// the freed clusters. Every crash state of the log (torn sectors included) must check
// without corruption, by our check and, for a sample, by qemu-img.
func TestRefTableGrowthWithPendingFreesIsCrashSafe(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "a.qcow2", "cluster_size=512,refcount_bits=64", "4M")
	engQemu(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 1792k", p)
	s := storeOf(t, p)
	before, err := ReadHeader(s)
	if err != nil {
		t.Fatal(err)
	}
	s.StartLog()
	img, err := OpenStorage(s, dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < 512; i++ {
		if err := img.Discard(GuestOffset(2*i*512), 512); err != nil {
			t.Fatal(err)
		}
	}
	if len(img.deferred) != 512 {
		t.Fatalf("setup: %d frees pending, want 512", len(img.deferred))
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{0x22}, 256<<10), 1792<<10); err != nil {
		t.Fatal(err)
	}
	if h := img.Header(); h.RefTableOffset == before.RefTableOffset {
		t.Fatalf("setup: the refcount table did not move (%d clusters at %#x)", h.RefTableClusters, uint64(h.RefTableOffset))
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := img.WriteAt(bytes.Repeat([]byte{0x33}, 128<<10), 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	states, sampled := 0, 0
	for pt, st := range s.CrashStates(3, 7, memstore.CrashConfig{Torn: true}) {
		states++
		res, err := CheckStorage(st, RepairNone)
		if err != nil || res.Corruptions > 0 || res.CheckErrors > 0 {
			t.Fatalf("crash state %+v: our check: %v, %d corruptions, %d check errors\n%v", pt, err, res.Corruptions, res.CheckErrors, res.Messages)
		}
		if states%25 == 0 {
			sampled++
			path := filepath.Join(dir, fmt.Sprintf("state-%d.qcow2", states))
			if err := st.WriteFile(path); err != nil {
				t.Fatal(err)
			}
			if q := corpus.QemuCheck(t, path, corpus.CheckOptions{}); q.ExitCode != 0 && q.ExitCode != 3 {
				t.Fatalf("crash state %+v: qemu-img check %v", pt, q)
			}
		}
	}
	t.Logf("%d crash states checked, %d of them by qemu-img too", states, sampled)
}
