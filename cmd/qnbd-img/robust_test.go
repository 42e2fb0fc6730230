// Damaged images: every command must end with a message and a status, never a panic or a hang.
package main

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDamagedImagesNoPanic(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	imgs := qcow2Images(t, dir)
	rng := rand.New(rand.NewPCG(1, 2))
	cases := 0
	for _, img := range imgs[:8] {
		orig, err := os.ReadFile(filepath.Join(dir, img))
		if err != nil {
			t.Fatal(err)
		}
		for range 12 {
			b := append([]byte(nil), orig...)
			// Damage the metadata: flip bytes in the first clusters, where the header, the
			// L1 table, the refcount structures and the first L2 tables live.
			for range 1 + rng.IntN(8) {
				i := rng.IntN(min(len(b), 6*65536))
				if rng.IntN(3) == 0 {
					i = rng.IntN(112) // the header itself
				}
				b[i] ^= byte(1 + rng.IntN(255))
			}
			if err := os.WriteFile(filepath.Join(dir, "damaged.qcow2"), b, 0o644); err != nil {
				t.Fatal(err)
			}
			// In-process (a panic is recovered and reported here), with absolute names so
			// that the test needs no working directory and can run in parallel.
			damaged, out := filepath.Join(dir, "damaged.qcow2"), filepath.Join(dir, "out.raw")
			for _, args := range [][]string{
				{"info", "--output=json", damaged},
				{"map", "--output=json", damaged},
				{"check", damaged},
				{"compare", damaged, damaged},
				{"convert", "-O", "raw", damaged, out},
			} {
				cases++
				done := make(chan result, 1)
				go func() {
					defer func() {
						if p := recover(); p != nil {
							t.Errorf("%q on %s with damage panicked: %v", args, img, p)
							done <- result{}
						}
					}()
					done <- oursAt(args...)
				}()
				select {
				case r := <-done:
					if r.code != 0 && r.stderr == "" && r.stdout == "" {
						t.Errorf("%q on damaged %s: exit %d without a message", args, img, r.code)
					}
				case <-time.After(20 * time.Second):
					t.Fatalf("%q on damaged %s hangs", args, img)
				}
			}
		}
	}
	t.Logf("%d runs on damaged images", cases)
}
