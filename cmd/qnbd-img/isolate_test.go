// Helpers that give a parallel subtest its own copies of the images it changes.
package main

import (
	"os"
	"path/filepath"
	"testing"
)

// copyFiles copies the named files (relative names) from src into dst.
func copyFiles(t *testing.T, src, dst string, names ...string) {
	t.Helper()
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(src, n))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dst, n)), 0o755); err != nil {
			t.Fatal(err)
		}
		write(t, dst, n, b)
	}
}

// isolated returns a new directory of t's holding copies of the named files of src.
func isolated(t *testing.T, src string, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	copyFiles(t, src, dir, names...)
	return dir
}
