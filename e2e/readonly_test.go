// Every corpus image served read-only by qnbd reads exactly as QEMU reads the image itself
// (qemu-img compare of the image against the NBD export), and its base:allocation and
// qemu:allocation-depth maps (nbdinfo --map), and qemu-img map through QEMU's NBD client,
// equal those of qemu-nbd serving the same image;
// internal snapshots likewise through -l. A read-only server never changes the files.
package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// mapExtent is one entry of nbdinfo --map --json.
type mapExtent struct {
	Offset      int64  `json:"offset"`
	Length      int64  `json:"length"`
	Type        int    `json:"type"`
	Description string `json:"description"`
}

// nbdinfoMap runs nbdinfo --map[=ctx] --json on uri and returns the extents with adjacent
// runs of the same type merged: NBD lets a server split runs anywhere, so only the merged
// map is meaningful.
func nbdinfoMap(t *testing.T, uri, ctx string) []mapExtent {
	t.Helper()
	flag := "--map"
	if ctx != "" {
		flag += "=" + ctx
	}
	out := run(t, "nbdinfo", flag, "--json", uri)
	var exts []mapExtent
	if err := json.Unmarshal([]byte(out), &exts); err != nil {
		t.Fatalf("nbdinfo %s --json %s: %v\n%s", flag, uri, err, out)
	}
	var merged []mapExtent
	for _, e := range exts {
		if n := len(merged); n > 0 && merged[n-1].Type == e.Type && merged[n-1].Offset+merged[n-1].Length == e.Offset {
			merged[n-1].Length += e.Length
			continue
		}
		merged = append(merged, e)
	}
	return merged
}

// fileStamp is what a read-only server must leave unchanged about a file.
type fileStamp struct {
	Size    int64
	ModTime time.Time
}

func stampFiles(t *testing.T, files []string) map[string]fileStamp {
	t.Helper()
	out := map[string]fileStamp{}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = fileStamp{fi.Size(), fi.ModTime()}
	}
	return out
}

// Counters reported by the read-only test (for the suite's summary in the log).
var (
	roImagesCompared atomic.Int64
	roMapsCompared   atomic.Int64
)

// TestReadOnlyCorpusMatchesQemu serves every corpus image with qnbd -r -A and checks it
// against QEMU: qemu-img compare between the image (read by QEMU's own driver) and the
// export, nbdinfo --map and --map=qemu:allocation-depth and qemu-img map over NBD against
// qemu-nbd -r -A serving the same image, and each internal snapshot through -l the same way.
func TestReadOnlyCorpusMatchesQemu(t *testing.T) {
	imgs := corpus.Shared(t)
	if len(imgs) < 50 {
		t.Fatalf("corpus has only %d images", len(imgs))
	}
	t.Cleanup(func() {
		t.Logf("%d images (and snapshots) compared with qemu-img compare, %d maps (nbdinfo, qemu-img map) compared with qemu-nbd's",
			roImagesCompared.Load(), roMapsCompared.Load())
	})
	for _, img := range imgs {
		t.Run(img.Name, func(t *testing.T) {
			t.Parallel()
			before := stampFiles(t, img.Files())
			serveAndCompare(t, img, nil, func(uri string) {
				requireSame(t, img.Path, img.Format, uri, "raw")
			})
			for _, snap := range img.Snapshots() {
				raw := filepath.Join(t.TempDir(), "snap.raw")
				if err := corpus.ToRawSnapshot(t.Context(), img.Path, snap, raw); err != nil {
					t.Fatal(err)
				}
				serveAndCompare(t, img, []string{"-l", snap}, func(uri string) {
					requireSame(t, raw, "raw", uri, "raw")
				})
			}
			if after := stampFiles(t, img.Files()); !reflect.DeepEqual(before, after) {
				t.Errorf("serving read-only changed the image's files: before %v, after %v", before, after)
			}
		})
	}
}

// serveAndCompare serves img read-only with extra flags from qnbd and from qemu-nbd, runs
// compare on qnbd's URI, and compares the two servers' maps.
func serveAndCompare(t *testing.T, img *corpus.Image, extra []string, compare func(uri string)) {
	t.Helper()
	args := append(append([]string{"-r", "-A", "-f", img.Format}, extra...), img.Path)
	q := startQnbd(t, serverConfig{Args: args})
	ref := startQemuNBD(t, serverConfig{Args: args})
	compare(q.URI(""))
	roImagesCompared.Add(1)
	for _, ctx := range []string{"", "qemu:allocation-depth"} {
		got, want := nbdinfoMap(t, q.URI(""), ctx), nbdinfoMap(t, ref.URI(""), ctx)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("nbdinfo --map=%s %v: qnbd and qemu-nbd differ\nqnbd:     %v\nqemu-nbd: %v", ctx, extra, got, want)
		}
		roMapsCompared.Add(1)
	}
	// qemu-img map through QEMU's NBD client (base:allocation as QEMU's block layer sees it).
	gotMap := run(t, "qemu-img", "map", "-f", "raw", "--output=json", q.URI(""))
	wantMap := run(t, "qemu-img", "map", "-f", "raw", "--output=json", ref.URI(""))
	if gotMap != wantMap {
		t.Errorf("qemu-img map over NBD %v: qnbd and qemu-nbd differ\nqnbd:\n%s\nqemu-nbd:\n%s", extra, gotMap, wantMap)
	}
	roMapsCompared.Add(1)
	q.Stop()
	ref.Stop()
}
