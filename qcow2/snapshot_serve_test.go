// Serving an internal snapshot, and writing over clusters and L2 tables shared with one.
package qcow2

import (
	"bytes"
	"errors"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// TestSnapshotStaysIntactUnderActiveWrites serves an internal snapshot read-only, and writes to the active
// layer of an image whose clusters and L2 tables are shared with a snapshot: the writes copy
// (COW) shared L2 tables and clusters, and the snapshot's contents stay as they were.
func TestSnapshotStaysIntactUnderActiveWrites(t *testing.T) {
	dir := t.TempDir()
	p := engCreate(t, dir, "s.qcow2", "cluster_size=4k", "4M")
	engQemu(t, "qemu-io", "-c", "write -P 0xaa 0 128k", p)
	engQemu(t, "qemu-img", "snapshot", "-c", "s1", p)
	engQemu(t, "qemu-io", "-c", "write -P 0xbb 64k 8k", p)
	snapWant := engConvertRaw(t, p, "-l", "snapshot.name=s1")

	ro, err := Open(p, OpenOptions{Snapshot: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	if got := engReadAll(t, ro); !bytes.Equal(got, snapWant) {
		t.Fatalf("snapshot read differs: %s", engFirstDiff(got, snapWant))
	}
	if _, err := ro.WriteAt([]byte{1}, 0); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("write to a snapshot: %v, want ErrReadOnly", err)
	}
	if len(ro.Snapshots()) != 1 {
		t.Fatalf("snapshots: %+v", ro.Snapshots())
	}
	ro.Close()

	shadow := engConvertRaw(t, p)
	img := openTestImage(t, p, OpenOptions{})
	for _, w := range []struct {
		off int64
		n   int
	}{{0, 4096}, {1000, 10}, {70 << 10, 20 << 10}, {2 << 20, 4096}} {
		b := engPattern(w.n, byte(w.off))
		engWrite(t, img, w.off, b)
		copy(shadow[w.off:], b)
	}
	if got := engReadAll(t, img); !bytes.Equal(got, shadow) {
		t.Fatalf("active layer differs: %s", engFirstDiff(got, shadow))
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	corpus.RequireClean(t, p)
	if got := engConvertRaw(t, p, "-l", "snapshot.name=s1"); !bytes.Equal(got, snapWant) {
		t.Fatalf("snapshot changed by writes to the active layer: %s", engFirstDiff(got, snapWant))
	}
	if got := engConvertRaw(t, p); !bytes.Equal(got, shadow) {
		t.Fatalf("qemu reads the active layer differently: %s", engFirstDiff(got, shadow))
	}
}
