// qnbd-img map against qemu-img map, byte for byte, on every file of the shared test corpus
// (internal/testing/corpus), backing layers and the 4 TiB sparse image included.
package main

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

// oursAt runs qnbd-img in-process like ours, without changing directory, so that parallel
// tests can use it; file names must then be absolute.
func oursAt(args ...string) result {
	var out, errb bytes.Buffer
	code := run(append([]string{"qemu-img"}, args...), &out, &errb)
	return result{out.String(), errb.String(), code}
}

// corpusFiles lists every file of the corpus QEMU can open as an image: each catalogue
// image and each layer of its backing chain, once.
func corpusFiles(imgs []*corpus.Image) []*corpus.Image {
	seen := map[string]bool{}
	var out []*corpus.Image
	for _, img := range imgs {
		for l := img; l != nil; l = l.Backing {
			if !seen[l.Path] {
				seen[l.Path] = true
				out = append(out, l)
			}
		}
	}
	return out
}

// corpusMapArgs are the map invocations compared on each image, by label: JSON and human
// with the format given, JSON with the format probed, and JSON over the middle third of the
// image (an unaligned window). The backing chain is opened as the image header says (its
// backing format is recorded in every corpus overlay).
func corpusMapArgs(img *corpus.Image) map[string][]string {
	third := strconv.FormatInt(img.Size/3, 10)
	return map[string][]string{
		"json":        {"map", "-U", "--output=json", "-f", img.Format, img.Path},
		"human":       {"map", "-U", "--output=human", "-f", img.Format, img.Path},
		"json-probed": {"map", "-U", "--output=json", img.Path},
		"json-window": {"map", "-U", "--output=json", "-f", img.Format, "-s", third, "-l", third, img.Path},
	}
}

// TestCorpusMapMatchesQemu runs qnbd-img map and qemu-img map on every corpus file and
// requires identical stdout, stderr and exit status, then lists the images that differ.
func TestCorpusMapMatchesQemu(t *testing.T) {
	t.Parallel()
	files := corpusFiles(corpus.Shared(t))
	var mu sync.Mutex
	differ := map[string][]string{}
	t.Run("images", func(t *testing.T) {
		for _, img := range files {
			t.Run(img.Name, func(t *testing.T) {
				t.Parallel()
				for label, args := range corpusMapArgs(img) {
					want := qemu(t, t.TempDir(), args...)
					got := oursAt(args...)
					if want.code != 0 && !strings.Contains(want.stderr, "compressed clusters") {
						// Only compressed images make qemu-img map fail (human output); any other
						// failure means the corpus or the tool is broken, not the comparison.
						t.Errorf("qemu-img %s failed: %v", strings.Join(args, " "), want)
					}
					if got != want {
						t.Errorf("qnbd-img %s differs from qemu-img:\n%s", strings.Join(args, " "), mapDiff(want, got))
						mu.Lock()
						differ[img.Name] = append(differ[img.Name], label)
						mu.Unlock()
					}
				}
			})
		}
	})
	names := make([]string, 0, len(differ))
	for n, labels := range differ {
		sort.Strings(labels)
		names = append(names, n+" ("+strings.Join(labels, ", ")+")")
	}
	sort.Strings(names)
	if len(names) > 0 {
		t.Errorf("map differs from qemu-img on %d of %d corpus files: %s", len(names), len(files), strings.Join(names, "; "))
	}
	t.Logf("compared %d corpus files, %d invocations each", len(files), len(corpusMapArgs(files[0])))
}

// mapDiff shows the exit statuses, stderr and the first differing line of stdout of two
// map runs (the whole outputs can be long).
func mapDiff(want, got result) string {
	var b strings.Builder
	if want.code != got.code || want.stderr != got.stderr {
		fmt.Fprintf(&b, "qemu-img: exit %d, stderr %q\nqnbd-img: exit %d, stderr %q\n", want.code, want.stderr, got.code, got.stderr)
	}
	wl, gl := strings.Split(want.stdout, "\n"), strings.Split(got.stdout, "\n")
	for i := 0; i < max(len(wl), len(gl)); i++ {
		var w, g string
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if w != g {
			fmt.Fprintf(&b, "first differing stdout line %d:\nqemu-img: %s\nqnbd-img: %s\n", i+1, w, g)
			break
		}
	}
	return b.String()
}
