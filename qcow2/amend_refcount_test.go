// ChangeRefcountOrder: every count is carried over to the new width (leaks included), the old
// structures are freed, and a count the new width cannot hold is refused before any write.
package qcow2

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// refcountFixture makes a 4 KiB-cluster image with data, a qemu-img snapshot (counts of 2)
// and one planted leak (a data cluster counted 3 but referenced once), and returns its path.
func refcountFixture(t *testing.T) string {
	t.Helper()
	p := engCreate(t, t.TempDir(), "r.qcow2", "cluster_size=4k", "2M")
	engQemu(t, "qemu-io", "-c", "write -P 1 0 256k", "-c", "write -P 2 1M 64k", p)
	engQemu(t, "qemu-img", "snapshot", "-c", "s1", p)
	engQemu(t, "qemu-io", "-c", "write -P 3 0 16k", p)
	m := ccOpenImg(t, p)
	m.setRefcount(m.dataCluster(1<<20), 3)
	return p
}

// allRefcounts reads the stored count of every cluster of the file.
func allRefcounts(t *testing.T, p string) (*ccImg, []refcount) {
	t.Helper()
	m := ccOpenImg(t, p)
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(fi.Size()) / m.h.ClusterSize()
	out := make([]refcount, n)
	for c := range out {
		out[c] = m.refcount(hostCluster(c))
	}
	return m, out
}

func TestChangeRefcountOrderKeepsEveryCount(t *testing.T) {
	for _, order := range []uint32{1, 3, 6} {
		p := refcountFixture(t)
		before, old := allRefcounts(t, p)
		oldStruct := map[hostCluster]bool{}
		g := before.h.Geometry()
		for i := range uint64(before.h.RefTableClusters) {
			oldStruct[before.h.RefTableOffset.cluster(g)+hostCluster(i)] = true
			for j := range g.ClusterSize() / 8 {
				if e := refTableEntry(before.u64(uint64(before.h.RefTableOffset) + (i*g.ClusterSize()/8+j)*8)); e.Offset() != 0 {
					oldStruct[e.Offset().cluster(g)] = true
				}
			}
		}
		img, err := Open(p, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := img.ChangeRefcountOrder(order, nil); err != nil {
			t.Fatalf("order %d: %v", order, err)
		}
		if _, err := img.WriteAt(bytes.Repeat([]byte{9}, 8192), 1536<<10); err != nil {
			t.Fatal(err) // allocates through the new structures
		}
		if err := img.Close(); err != nil {
			t.Fatal(err)
		}
		after, now := allRefcounts(t, p)
		if after.h.RefcountOrder != order {
			t.Fatalf("order %d: the header says %d", order, after.h.RefcountOrder)
		}
		for c, v := range old {
			if !oldStruct[hostCluster(c)] && now[c] != v {
				t.Errorf("order %d: cluster %d counted %d, was %d", order, c, now[c], v)
			}
		}
		q := corpus.QemuCheck(t, p, corpus.CheckOptions{})
		if q.Corruptions != 0 || q.CheckErrors != 0 || q.Leaks != 1 {
			t.Errorf("order %d: qemu-img check: %d corruptions, %d errors, %d leaks (want the planted one only)\n%s",
				order, q.Corruptions, q.CheckErrors, q.Leaks, q.Stderr)
		}
	}
}

func TestChangeRefcountOrderRefusesTooLargeCountsUntouched(t *testing.T) {
	p := refcountFixture(t)
	was, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Open(p, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = img.ChangeRefcountOrder(0, nil)
	var ae *AmendError
	if !errors.As(err, &ae) || !errors.Is(err, ErrUnsupported) {
		t.Fatalf("1-bit counts with counts of 2 and 3: %v, want an AmendError", err)
	}
	// The first cluster in host order with a count above 1 is a snapshot-shared one, before
	// the leak; the message names it as QEMU does.
	if want := "Cannot decrease refcount entry width to 1 bits: Cluster at offset "; !strings.HasPrefix(ae.Msg, want) {
		t.Errorf("message %q", ae.Msg)
	}
	if err := img.Close(); err != nil {
		t.Fatal(err)
	}
	now, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(was, now) {
		t.Errorf("the refused change wrote to the image")
	}
}
