// Guest writes in write-through mode are durable when WriteAt returns.
package qcow2

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
	"github.com/qnbd/qnbd/qcow2/internal/memstore"
)

// TestWriteThroughIsDurableOnReturn: with WriteThrough every write is durable when it returns: a crash that
// drops everything unsynced keeps it, and the image is consistent.
func TestWriteThroughIsDurableOnReturn(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "w.qcow2", "cluster_size=4k", "4M")
	s := storeOf(t, p)
	img, err := OpenStorage(s, dir, OpenOptions{WriteThrough: true})
	if err != nil {
		t.Fatal(err)
	}
	want := engPattern(10000, 9)
	engWrite(t, img, 5000, want)
	if err := img.Zero(40000, 8192, ZeroMayUnmap); err != nil {
		t.Fatal(err)
	}
	crashed := s.CrashClone(nil, memstore.CrashConfig{Policy: memstore.DropUnsynced})
	img.Close()
	f := filepath.Join(dir, "crashed.qcow2")
	if err := crashed.WriteFile(f); err != nil {
		t.Fatal(err)
	}
	corpus.RequireClean(t, f)
	got := engConvertRaw(t, f)
	if !bytes.Equal(got[5000:15000], want) {
		t.Fatal("write-through data lost in a crash")
	}
}
