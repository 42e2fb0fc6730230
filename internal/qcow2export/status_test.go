// Block status of every corpus image, read-only, against qemu-nbd serving the same file.
package qcow2export

import (
	"reflect"
	"testing"

	"github.com/qnbd/qnbd/internal/testing/corpus"
)

func TestBlockStatusMatchesQemuNBD(t *testing.T) {
	imgs := corpus.Shared(t)
	n := 0
	for _, img := range imgs {
		if img.Format != "qcow2" {
			continue
		}
		n++
		t.Run(img.Name, func(t *testing.T) {
			t.Parallel()
			ours, _ := serveQnbd(t, img.Path, serveOpts{readOnly: true})
			theirs, _ := serveQemu(t, img.Path, serveOpts{readOnly: true})
			for _, ctx := range []string{"base:allocation", "qemu:allocation-depth"} {
				got, want := nbdMap(t, ours, ctx), nbdMap(t, theirs, ctx)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("%s map differs\n qnbd:     %v\n qemu-nbd: %v", ctx, got, want)
				}
			}
		})
	}
	if n < 20 {
		t.Fatalf("only %d qcow2 corpus images", n)
	}
}
