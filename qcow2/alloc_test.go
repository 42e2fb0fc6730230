package qcow2

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"
	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// describeAlloc dumps the allocator's view of the refcount structures, in clusters.
func describeAlloc(a *allocator) string {
	var b strings.Builder
	g := a.g
	fmt.Fprintf(&b, "reftable: cluster %d, %d cluster(s), %d entries\n", a.tableOff.cluster(g), a.tableClusters, len(a.table))
	b.WriteString("refblocks:")
	for i, e := range a.table {
		if e.Offset() != 0 {
			fmt.Fprintf(&b, " [%d]=%d", i, e.Offset().cluster(g))
		}
	}
	fmt.Fprintf(&b, "\nfirst free: %d\nend: cluster %d\n", a.firstFree, hostCluster(uint64(a.end)>>g.ClusterBits))
	return b.String()
}

// TestAllocatorScripts runs testdata/alloc: the allocator's reasoning, step by step, on real
// images (qemu-img creates them; qemu-img check judges them at the end of each script).
//
//	new cluster=512 refbits=16 size=1M   create and open an image
//	alloc N                              allocate N contiguous clusters, print the first
//	free C N                             free N clusters from C
//	refcount A B                         print refcounts of clusters A..B
//	flush                                Flush the image
//	describe                             reftable, refblocks, first-free hint, end
//	check                                close, then qemu-img check: exit code, leaks, errors
func TestAllocatorScripts(t *testing.T) {
	datadriven.Walk(t, "testdata/alloc", func(t *testing.T, path string) {
		var img *Image
		var p string
		defer func() {
			if img != nil {
				img.Close()
			}
		}()
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			switch d.Cmd {
			case "new":
				cluster, refbits, size := "512", "16", "1M"
				if d.HasArg("cluster") {
					d.ScanArgs(t, "cluster", &cluster)
				}
				if d.HasArg("refbits") {
					d.ScanArgs(t, "refbits", &refbits)
				}
				if d.HasArg("size") {
					d.ScanArgs(t, "size", &size)
				}
				p = engCreate(t, t.TempDir(), "a.qcow2", "cluster_size="+cluster+",refcount_bits="+refbits, size)
				var err error
				if img, err = Open(p, OpenOptions{}); err != nil {
					t.Fatal(err)
				}
				return describeAlloc(img.alloc)
			case "alloc":
				var n int
				d.ScanArgs(t, "n", &n)
				img.mu.Lock()
				c, err := img.alloc.allocMeta(ClusterCount(n), AllocData)
				img.trimCaches()
				img.mu.Unlock()
				if err != nil {
					return "error: " + err.Error()
				}
				return fmt.Sprintf("clusters %d..%d\n", c, c.Add(ClusterCount(n-1)))
			case "free":
				var c, n int
				d.ScanArgs(t, "c", &c)
				d.ScanArgs(t, "n", &n)
				img.mu.Lock()
				img.freeNow(hostCluster(c), ClusterCount(n), false)
				img.trimCaches()
				img.mu.Unlock()
				return fmt.Sprintf("first free: %d\n", img.alloc.firstFree)
			case "refcount":
				var a, b int
				d.ScanArgs(t, "a", &a)
				d.ScanArgs(t, "b", &b)
				var out strings.Builder
				img.mu.Lock()
				for c := a; c <= b; c++ {
					rc, err := img.alloc.refcount(hostCluster(c))
					if err != nil {
						out.WriteString("error: " + err.Error())
						break
					}
					fmt.Fprintf(&out, "%d", rc)
				}
				img.mu.Unlock()
				return out.String() + "\n"
			case "flush":
				if err := img.Flush(); err != nil {
					return "error: " + err.Error()
				}
				return "ok\n"
			case "describe":
				return describeAlloc(img.alloc)
			case "check":
				if err := img.Close(); err != nil {
					return "close error: " + err.Error()
				}
				img = nil
				q := corpus.QemuCheck(t, p, corpus.CheckOptions{Human: true})
				return fmt.Sprintf("exit %d\n%s", q.ExitCode, summarizeCheck(q.Text))
			}
			t.Fatalf("unknown command %s", d.Cmd)
			return ""
		})
	})
}

var checkLine = regexp.MustCompile(`(?m)^(\d+ leaked clusters were found.*|No errors were found.*|\d+ errors were found.*|ERROR.*)$`)

// summarizeCheck keeps the lines of qemu-img check output that judge the image.
func summarizeCheck(out string) string {
	var b strings.Builder
	for _, l := range checkLine.FindAllString(out, -1) {
		b.WriteString(l + "\n")
	}
	return b.String()
}

var _ = filepath.Join
