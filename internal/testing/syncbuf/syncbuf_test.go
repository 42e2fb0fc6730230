// Tests of Buffer under concurrent writers and readers (meaningful with -race).
package syncbuf

import (
	"strings"
	"sync"
	"testing"
)

func TestConcurrentWriteString(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	const writers, writes = 4, 200
	for range writers {
		wg.Go(func() {
			for range writes {
				b.Write([]byte("ab"))
			}
		})
	}
	wg.Go(func() {
		for range writes {
			if s := b.String(); s != strings.Repeat("ab", len(s)/2) {
				t.Errorf("torn read %q", s)
				return
			}
		}
	})
	wg.Wait()
	if got := b.String(); got != strings.Repeat("ab", writers*writes) {
		t.Fatalf("got %d bytes, want %d", len(got), 2*writers*writes)
	}
}
