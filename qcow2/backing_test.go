// Backing chains: loops and over-deep chains are refused with a clear error.
package qcow2

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestBackingLoopsAndDeepChainsRefused: loops and over-deep chains are refused with a clear error.
func TestBackingLoopsAndDeepChainsRefused(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.qcow2")
	b := engCreate(t, dir, "b.qcow2", "", "1M")
	engCreate(t, dir, "a.qcow2", "backing_file="+b+",backing_fmt=qcow2", "1M")
	engQemu(t, "qemu-img", "rebase", "-u", "-F", "qcow2", "-b", a, b)
	if _, err := Open(a, OpenOptions{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "loops") {
		t.Fatalf("loop: %v", err)
	}
	prev := engCreate(t, dir, "c0.qcow2", "", "1M")
	for i := 1; i <= maxChainDepth+1; i++ {
		prev = engCreate(t, dir, "c"+itoaTest(i)+".qcow2", "backing_file="+prev+",backing_fmt=qcow2", "1M")
	}
	if _, err := Open(prev, OpenOptions{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "deeper") {
		t.Fatalf("deep chain: %v", err)
	}
	img, err := Open(prev, OpenOptions{ReadOnly: true, NoBacking: true})
	if err != nil {
		t.Fatalf("NoBacking: %v", err)
	}
	img.Close()
}

func itoaTest(i int) string { return string(rune('a'+i/26)) + string(rune('a'+i%26)) }
